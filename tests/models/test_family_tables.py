"""The family tables derived from the declarations (models/<family>/__init__.py, models/families.py) equal the
hand-written tables they replaced (frozen in family_tables_frozen.py): every name exported before is still
exported from the same module, every model_type maps to the same class, every variant is the same."""
import dataclasses
import importlib
import subprocess
import sys

import pytest

from tests.models import family_tables_frozen as frozen

# families declared after the freeze (issue 19), by model_type -> package: their own parity tests check them
ADDED_AFTER_FREEZE = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "whisper": "whisper",
                      "starcoder2": "starcoder2", "phi": "phi", "olmo2": "olmo2",
                      "smollm3": "smollm3", "gpt_oss": "gpt_oss",
                      "qwen2_vl": "qwen2_vl", "qwen2_vl_text": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl",
                      "qwen2_5_vl_text": "qwen2_5_vl", "cogvlm2": "cogvlm2"}
_ADDED_PACKAGES = {f"mindformers_hf.models.{package}" for package in ADDED_AFTER_FREEZE.values()}


def _added_config(name):
    from mindformers_hf.models.families import families

    return any(fam.config_class == name for t, (_, fam) in families().items() if t in ADDED_AFTER_FREEZE)


def _fields(variant, default):
    return {f.name: getattr(variant, f.name) for f in dataclasses.fields(variant)
            if getattr(variant, f.name) != getattr(default, f.name)}


def test_every_name_exported_before_is_exported_from_the_same_module():
    import mindformers_hf

    changed = {name: (module, mindformers_hf._source(name)) for name, module in frozen.EXPORTS.items()
               if mindformers_hf._source(name) != module}
    assert not changed, changed
    assert set(frozen.EXPORTS) <= set(mindformers_hf.__all__)


def test_family_exports_are_exactly_the_old_family_rows():
    from mindformers_hf.models.families import exports

    old = {name: module for name, module in frozen.EXPORTS.items()
           if module.startswith("mindformers_hf.models.") and module != "mindformers_hf.models.auto"}
    new = {name: module for name, module in exports().items()
           if module != "transformers" and module not in _ADDED_PACKAGES}
    assert new == old
    # the transformers config classes of our families were re-exported by name before, and still are
    old_configs = {n for n, m in frozen.EXPORTS.items() if m == "transformers" and n.endswith("Config")
                   and n not in ("PretrainedConfig", "PreTrainedConfig", "GenerationConfig")}
    assert {n for n, m in exports().items() if m == "transformers" and not _added_config(n)} == old_configs


@pytest.mark.parametrize("table", ["MODEL_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
                                   "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                                   "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "REMOTE_FORMAT_CONFIG_NAMES"])
def test_auto_mappings_map_every_model_type_to_the_same_class(table):
    from mindformers_hf.models.auto import modeling_auto
    from mindformers_hf.models.family import import_object

    old, new = getattr(frozen, table), getattr(modeling_auto, table)
    assert set(new) - set(ADDED_AFTER_FREEZE) == set(old)
    for model_type, target in old.items():
        assert import_object(new[model_type]) is import_object(target), (table, model_type)


def test_remote_format_architectures_are_unchanged():
    from mindformers_hf.models.auto import modeling_auto

    added = {arch: t for arch, t in modeling_auto.REMOTE_FORMAT_ARCHITECTURES.items() if t in ADDED_AFTER_FREEZE}
    assert added == {"CogVLMForCausalLM": "cogvlm2"}  # remote formats declared after the freeze
    assert {arch: t for arch, t in modeling_auto.REMOTE_FORMAT_ARCHITECTURES.items()
            if arch not in added} == frozen.REMOTE_FORMAT_ARCHITECTURES


def test_decoder_and_moe_variants_are_unchanged():
    from mindformers_hf.models.families import decoder_variant, families, moe_variant
    from mindformers_hf.models.family import DecoderVariant, MoeVariant

    for model_type in set(families()) - set(ADDED_AFTER_FREEZE):
        assert _fields(decoder_variant(model_type), DecoderVariant()) == frozen.DECODER_VARIANTS.get(model_type, {})
    assert {t for t, (_, fam) in families().items() if fam.moe} - set(ADDED_AFTER_FREEZE) == set(frozen.MOE_VARIANTS)
    for model_type, fields in frozen.MOE_VARIANTS.items():
        assert _fields(moe_variant(model_type), MoeVariant()) == fields
    with pytest.raises(NotImplementedError, match="no sparse-MoE layout.*'llama'.*known: deepseek_v2"):
        moe_variant("llama")


def test_family_packages_export_the_same_names():
    for package, names in frozen.PACKAGE_EXPORTS.items():
        module = importlib.import_module(f"mindformers_hf.models.{package}")
        assert sorted(module.__all__) == names, package
        for name in names:
            assert getattr(module, name) is getattr(module, name)


def test_classes_keep_their_lineage():
    """Built classes (LLaMA-shaped families declared without a modeling file) have the bases the hand-written
    ones had: the same MRO within mindformers_hf and the same base model for task heads."""
    import mindformers_hf

    for name, lineage in frozen.CLASS_LINEAGE.items():
        cls = getattr(mindformers_hf, name)
        if name.endswith("Config"):
            assert [c.__name__ for c in cls.__mro__[:2]] == lineage, name
            continue
        mro = [c.__name__ for c in cls.__mro__ if c.__module__.startswith("mindformers_hf")]
        base = getattr(cls, "_base_model_class", None)
        assert mro + ([f"base={base.__name__}"] if base is not None else []) == lineage, name
        # each class lived in models/<family>/modeling_<family>.py, as in transformers: built ones claim it still
        package = frozen.EXPORTS[name]
        assert (cls.__module__, cls.__qualname__) == (f"{package}.modeling_{package.rpartition('.')[2]}", name)
        modeling = importlib.import_module(cls.__module__)
        assert getattr(modeling, name) is cls


def test_built_classes_import_from_transformers_path_and_pickle_by_name():
    """A built class is found again by its module and name (pickle, copy, multiprocessing), and imports from
    the path transformers uses for it."""
    import pickle

    from mindformers_hf import Qwen2ForCausalLM, Qwen3MoeModel
    from mindformers_hf.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM as by_path

    assert by_path is Qwen2ForCausalLM
    assert pickle.loads(pickle.dumps(Qwen2ForCausalLM)) is Qwen2ForCausalLM
    assert pickle.loads(pickle.dumps(Qwen3MoeModel)) is Qwen3MoeModel


def test_the_docs_example_is_the_real_file():
    """docs/models.md's "Adding a family" shows models/qwen3/__init__.py whole."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "models.md").read_text(encoding="utf-8")
    example = docs.split("### Adding a family", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert example == (root / "src" / "mindformers_hf" / "models" / "qwen3" / "__init__.py").read_text(encoding="utf-8")


def test_a_new_family_is_one_declaration(tmp_path):
    """The docs' example (docs/models.md, "Adding a family"): one package whose __init__ declares the family
    makes AutoModelForCausalLM build it, the package export it and the decoder take its variant."""
    code = r'''
import importlib, pathlib, sys
import mindformers_hf
import mindformers_hf.models as models
from mindformers_hf.models import families
folder = pathlib.Path(sys.argv[1]) / "tinyfam"
folder.mkdir()
(folder / "__init__.py").write_text(
    "from ..family import DecoderVariant, Family, family_package\n"
    "FAMILY = Family('tinyfam', 'TinyFam', DecoderVariant(qk_norm=True, qkv_bias=True))\n"
    "__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)\n")
models.__path__.append(str(folder.parent))  # as if the folder were in src/mindformers_hf/models/
families.families.cache_clear()
importlib.reload(mindformers_hf)
from mindformers_hf.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers import Qwen3Config
config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8)
config.model_type = "tinyfam"
model = mindformers_hf.AutoModelForCausalLM.from_config(config)
print(type(model).__name__, type(model).__module__, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES["tinyfam"],
      "TinyFamForTokenClassification" in mindformers_hf.__all__, hasattr(model.model.layers[0].self_attn, "q_norm"),
      model.model.layers[0].self_attn.q_proj.bias is not None)
'''
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["TinyFamForCausalLM", "mindformers_hf.models.tinyfam.modeling_tinyfam",
                                     "mindformers_hf.models.tinyfam:TinyFamForCausalLM", "True", "True", "True"]


def test_two_packages_declaring_one_model_type_is_an_error(monkeypatch):
    from mindformers_hf.models import families
    from mindformers_hf.models.family import Family

    qwen2 = importlib.import_module("mindformers_hf.models.qwen2")
    monkeypatch.setattr(qwen2, "FAMILY", Family("llama", "Qwen2"))
    families.families.cache_clear()
    try:
        with pytest.raises(ValueError, match="'llama' is declared by mindformers_hf.models.llama and "
                                             "mindformers_hf.models.qwen2"):
            families.families()
    finally:
        monkeypatch.undo()
        families.families.cache_clear()
