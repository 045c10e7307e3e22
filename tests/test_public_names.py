"""Every public transformers name is exported by mindformers_hf or listed, with a reason, in
docs/differences.md ("transformers names we do not export"). The walk runs over transformers' lazy
import table (`transformers.__all__`, each name with the module that defines it)."""
import re
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

DIFFERENCES = Path(__file__).resolve().parents[1] / "docs" / "differences.md"
SECTION = "## transformers names we do not export"
# A bullet: one or more backticked patterns, a colon, a reason.
_BULLET = re.compile(r"^- ((?:`[^`]+`(?:, )?)+): (\S.*)")


def listed_patterns():
    """[(pattern, reason)] from the section (a bullet's reason may continue on indented lines)."""
    text = DIFFERENCES.read_text(encoding="utf-8")
    assert SECTION in text, f"{DIFFERENCES} lacks the section {SECTION!r}"
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    entries = []
    for line in body.splitlines():
        match = _BULLET.match(line)
        if match:
            entries += [(p, match.group(2)) for p in re.findall(r"`([^`]+)`", match.group(1))]
        else:
            assert not line.startswith("- "), f"unparsable bullet in {SECTION!r}: {line!r}"
    return entries


def _our_families():
    from mindformers_hf.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return set(MODEL_MAPPING_NAMES)


def matches(pattern, name, module, families):
    """`Name*` patterns match the name; `module:Name` patterns the transformers module and the name, where
    `<other>` in the module stands for a model family we have no native model for, `<ours>` for one we have."""
    if ":" not in pattern:
        return fnmatch(name, pattern)
    module_pattern, name_pattern = pattern.split(":", 1)
    if not fnmatch(name, name_pattern):
        return False
    for placeholder, ours in (("<other>", False), ("<ours>", True)):
        if placeholder in module_pattern:
            parts = module.split(".")
            if len(parts) < 2 or parts[0] != "models" or (parts[1] in families) != ours:
                return False
            module_pattern = module_pattern.replace(placeholder, parts[1])
    return fnmatch(module, module_pattern)


def transformers_public_names():
    """{name: defining module} for transformers' public names (submodule names left out)."""
    import transformers

    table = transformers._class_to_module  # the lazy module's name -> module table
    return {name: table[name] for name in transformers.__all__ if name in table}


def _exported(name):
    """Whether mindformers_hf exports the name, by its export rules (so the walk imports no module);
    test_exports_resolve checks that the rules' names really import."""
    import mindformers_hf

    return mindformers_hf._source(name) is not None


@pytest.fixture(scope="module")
def walk():
    names = transformers_public_names()
    assert len(names) > 3000  # the walk really walks transformers' table
    patterns = listed_patterns()
    families = _our_families()
    exported = {name for name in names if _exported(name)}
    covered = {}
    for name, module in names.items():
        if name not in exported:
            covered[name] = [p for p, _ in patterns if matches(p, name, module, families)]
    return names, exported, covered, patterns


def test_every_transformers_name_is_exported_or_listed(walk):
    names, exported, covered, _ = walk
    missing = sorted(f"{names[n]}:{n}" for n, found in covered.items() if not found)
    assert not missing, f"{len(missing)} transformers names neither exported nor listed in {DIFFERENCES.name}: " \
                        f"{missing[:40]}"


def test_every_listed_pattern_is_still_needed(walk):
    """A pattern that matches no unexported name is stale: the name was exported (or left transformers)."""
    _, _, covered, patterns = walk
    used = {p for found in covered.values() for p in found}
    stale = [p for p, _ in patterns if p not in used]
    assert not stale, f"patterns in {DIFFERENCES.name} that match no unexported transformers name: {stale}"


def test_exports_resolve(walk):
    """Every name of our own table imports, and so does a sample of each re-exported transformers kind."""
    import mindformers_hf

    names, exported, _, _ = walk
    by_source = {}
    for name in sorted(exported):
        by_source.setdefault(mindformers_hf._source(name), []).append(name)
    sample = [n for source, group in by_source.items()
              for n in (group if source.startswith("mindformers_hf") else group[::60])]
    assert len(sample) > 100
    for name in sample:
        assert getattr(mindformers_hf, name) is not None, name


def test_the_names_the_issue_asks_for_are_exported(walk):
    _, exported, _, _ = walk
    for name in ("HfArgumentParser", "DataCollatorForSeq2Seq", "DataCollatorForTokenClassification",
                 "DataCollatorWithFlattening", "DataCollatorForMultipleChoice", "get_scheduler",
                 "get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup", "EarlyStoppingCallback",
                 "TrainerState", "IntervalStrategy", "logging", "BertConfig", "LlamaTokenizer", "is_torch_available"):
        assert name in exported, name
    from mindformers_hf.utils import get_json_schema
    from transformers.utils import get_json_schema as hf_get_json_schema

    def add(a: int, b: int):
        """Add two numbers.

        Args:
            a: The first number.
            b: The second number.
        """
        return a + b

    assert get_json_schema(add) == hf_get_json_schema(add)


def test_exported_transformers_classes_are_transformers_own_or_ours():
    """Re-exported tensor-free names are transformers' objects; tokenizer classes are transformers' classes
    with `return_tensors="ms"` added, and a tokenizer AutoTokenizer loads is an instance of the exported class."""
    import transformers

    import mindformers_hf
    from mindformers_hf.tokenization import TokenizerMixin

    assert mindformers_hf.BertConfig is transformers.BertConfig
    assert mindformers_hf.HfArgumentParser is transformers.HfArgumentParser
    assert issubclass(mindformers_hf.LlamaTokenizer, transformers.LlamaTokenizer)
    assert issubclass(mindformers_hf.LlamaTokenizer, TokenizerMixin)
    assert mindformers_hf.LlamaTokenizer.__name__ == "LlamaTokenizer"


@pytest.mark.parametrize("name", ["GPT2Tokenizer", "LlamaTokenizer", "BertTokenizer"])
def test_family_tokenizer_class_encodes_as_transformers_and_gives_mindspore_tensors(name, tmp_path):
    import mindspore as ms
    import transformers

    import mindformers_hf
    from tests.trainer.conftest import make_char_tokenizer

    folder = make_char_tokenizer(tmp_path)
    hf = getattr(transformers, name).from_pretrained(folder)
    ours = getattr(mindformers_hf, name).from_pretrained(folder)
    texts = ["hello world", "a b, c!"]
    assert ours(texts)["input_ids"] == hf(texts)["input_ids"]  # the class's own __init__ rebuilt both alike
    batch = ours(texts, padding=True, return_tensors="ms")
    assert isinstance(batch["input_ids"], ms.Tensor)
    np.testing.assert_array_equal(batch["input_ids"].asnumpy(), hf(texts, padding=True, return_tensors="np")["input_ids"])
    auto = mindformers_hf.AutoTokenizer.from_pretrained(folder)
    assert isinstance(auto, getattr(mindformers_hf, type(auto).__name__))


def test_hf_argument_parser_fills_our_training_arguments():
    from mindformers_hf import HfArgumentParser, TrainingArguments

    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "out", "--learning_rate", "3e-4", "--lr_scheduler_type", "cosine"])
    assert isinstance(args, TrainingArguments)
    assert args.learning_rate == 3e-4 and args.lr_scheduler_type.value == "cosine"
