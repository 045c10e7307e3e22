"""THE family x capability matrix (tests/models/matrix.py): one parametrised test over (row, capability).

Expected values always come from transformers (torch, fp32, CPU) on the row's tiny checkpoint: HF's own folder for
a native family, the HF-native model a remote format was written from otherwise. A row's models are loaded once and
shared by its cells. Not-applicable cells check their reason still holds (transformers really has no such class /
GGUF architecture); cells covered by existing tests check those tests exist; pending cells are no test yet.
"""
import ast
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, set_seed
from tests.conftest import batch, make_hf_checkpoint
from tests.models import matrix
from tests.models.family_parity import (LOGITS_ATOL, assert_family_forward, assert_family_load,
                                        assert_generate_matches_hf, hf_call)
from tests.models.matrix import CAPABILITIES, ROWS, import_object, row_folders

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _params():
    for name, row in ROWS.items():
        for capability in CAPABILITIES:
            cell = row.cell(capability)
            if cell.kind == "pending":  # no test yet: the summary and docs say "not yet"
                continue
            marks = [pytest.mark.xfail(strict=True, reason=cell.xfail)] if cell.xfail else []
            yield pytest.param(name, capability, id=f"{name}-{capability}", marks=marks)


_MODELS = {}


def _models(name):
    """(ours, theirs) of a row, loaded once per session and shared by its cells."""
    if name not in _MODELS:
        our_folder, _ = row_folders(name)
        _MODELS[name] = AutoModelForCausalLM.from_pretrained(our_folder), matrix.hf_model(name)
    return _MODELS[name]


# ------------------------------------------------------------------------------------------------ the cells
def check_load(row, tmp_path):
    our_folder, hf_folder = row_folders(row.name)
    ours, theirs = _models(row.name)
    if row.remote:
        from tests.models.remote_formats import assert_remote_load

        arrays = matrix.written_arrays(row.name)
        skipped = [k for k in arrays if k.endswith("rotary_pos_emb.inv_freq")]  # a buffer ChatGLM2 files carry
        assert_remote_load(our_folder, arrays, row.architecture, tmp_path / "ours", skipped)
    else:
        assert_family_load(ours, theirs, our_folder, tmp_path / "ours", row.architecture)


def check_forward(row, tmp_path):
    ours, theirs = _models(row.name)
    if row.remote:
        from tests.models.remote_formats import assert_remote_forward, hf_reference

        assert type(ours).__name__ == row.architecture
        assert_remote_forward(ours, hf_reference(theirs))
    else:
        assert_family_forward(ours, theirs, row.architecture)
    if row.extra:
        import_object(row.extra)(ours, *row_folders(row.name))


def check_generate(row, tmp_path):
    """`model.generate()` against transformers' `generate` on the same weights, a left-padded batch of two: greedy
    and beam search tokens equal; seeded sampling is reproducible and its processed scores equal HF's processed
    scores with HF teacher-forced on our sampled tokens."""
    import torch

    ours, theirs = _models(row.name)
    our_folder, _ = row_folders(row.name)
    eager = {} if row.compiled_generate else dict(disable_compile=True)  # compiling costs seconds a row
    assert_generate_matches_hf(our_folder, ours, theirs=theirs, **eager)

    ids, mask = batch(128, length=9, pad_left=(0, 3), seed=4)
    options = dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.7, max_new_tokens=4, pad_token_id=0,
                   eos_token_id=2, output_scores=True, return_dict_in_generate=True)
    set_seed(11)
    out = ours.generate(input_ids=ids, attention_mask=mask, **options, **eager)
    set_seed(11)
    again = ours.generate(input_ids=ids, attention_mask=mask, **options, **eager)
    sequences = np.asarray(out.sequences)
    np.testing.assert_array_equal(np.asarray(again.sequences), sequences)
    assert len(out.scores) == sequences.shape[1] - ids.shape[1] > 0
    for step, score in enumerate(out.scores):
        # HF's generate on the prompt plus our tokens so far, one step: its `scores` are the processed logits
        prefix = sequences[:, :ids.shape[1] + step]
        prefix_mask = np.concatenate([mask, np.ones((2, step), mask.dtype)], 1)
        with torch.no_grad():
            want = theirs.generate(input_ids=torch.tensor(prefix), attention_mask=torch.tensor(prefix_mask),
                                   **{**options, "max_new_tokens": 1}).scores[0].numpy()
        got = np.asarray(score)
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"step {step}: -inf mask")
        finite = np.isfinite(want)
        assert finite.sum(-1).min() > 1 and np.abs(got[finite] - want[finite]).max() <= LOGITS_ATOL, f"step {step}"


# llama.cpp keys transformers 5.25's GGUF loader leaves unread (their config defaults fit one real model each)
_HF_GGUF_UNREAD = {"qwen2moe": ("moe_intermediate_size", "shared_expert_intermediate_size"),
                   "qwen3moe": ("moe_intermediate_size",), "gpt2": ("n_positions",)}
# rows whose checkpoint a llama.cpp file cannot hold: the GGUF cell writes the row with these kwargs changed. The
# qwen2_moe row's dense layer 0 (mlp_only_layers=[0]): llama.cpp's qwen2moe has MoE layers only, and HF's loader
# maps no dense-MLP tensor for it (it leaves them randomly initialised: measured)
_GGUF_ROW_CHANGES = {"qwen2moe": {"mlp_only_layers": []}}


def check_gguf(row, tmp_path):
    """A tiny unquantised GGUF of the row's weights, written as llama.cpp writes it: our loader builds the class,
    config and logits transformers' GGUF loader builds."""
    import torch
    import transformers

    from mindformers_hf.gguf_metadata import _ARCHITECTURES
    from tests.models.gguf_writer import write_gguf

    assert row.gguf_arch in _ARCHITECTURES, f"our GGUF loader does not read {row.gguf_arch!r}"
    _, hf_folder = row_folders(row.name)
    if row.gguf_arch in _GGUF_ROW_CHANGES:
        hf_folder = make_hf_checkpoint(tmp_path / "hf", row.config_class, row.model_class,
                                       **{**row.kwargs, **_GGUF_ROW_CHANGES[row.gguf_arch]})
    written = transformers.AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32)
    (tmp_path / "gguf").mkdir()
    write_gguf(written, tmp_path / "gguf" / "model.gguf", row.gguf_arch)
    # fields the file states but transformers' GGUF loader does not read are handed to it; ours reads them
    unread = {f: getattr(written.config, f) for f in _HF_GGUF_UNREAD.get(row.gguf_arch, ())}
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "gguf"), gguf_file="model.gguf",
                                                               dtype=torch.float32, **unread).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path / "gguf"), gguf_file="model.gguf")
    for field, value in unread.items():
        assert getattr(ours.config, field) == value == getattr(theirs.config, field), field
    assert type(ours).__name__ == type(theirs).__name__ == row.architecture
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                  "intermediate_size", "vocab_size", "rms_norm_eps", "tie_word_embeddings", "sliding_window",
                  "layer_types", "query_pre_attn_scalar", "rope_parameters", "max_position_embeddings"):
        if hasattr(theirs.config, field):
            assert getattr(ours.config, field) == getattr(theirs.config, field), field
    ids, mask = batch(128, length=11, pad_left=(0, 3))
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = hf_call(theirs, ids, mask).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(got - want)[valid].max() <= LOGITS_ATOL
    # and the file holds the row's weights (not something both loaders misread alike; the logits may differ from
    # the row's: GGUF carries no soft-caps, query_pre_attn_scalar or per-layer-type rotary bases)
    originals = written.state_dict()
    for name, param in ours.named_parameters():
        np.testing.assert_allclose(param.asnumpy(), originals[name].numpy(), atol=1e-6, err_msg=name)


def check_seq_cls(row, tmp_path):
    from tests.models.test_classification_heads import assert_sequence_classification

    folder = make_hf_checkpoint(tmp_path / "hf", row.config_class, row.seq_class, num_labels=3, **row.kwargs)
    assert_sequence_classification(folder, tmp_path / "ours")


# Train, LoRA and tensor parallel: built on branches trainlora19 / tp19; their cells are PENDING in matrix.py until
# the lead merges them and turns the cells into TEST(), which routes them here
def check_train(row, tmp_path):
    import_object("tests.models.matrix_train:check_train")(*row_folders(row.name), tmp_path)


def check_lora(row, tmp_path):
    import_object("tests.models.matrix_train:check_lora")(*row_folders(row.name), tmp_path)


_TP_RESULTS = {}


def check_tp(row, tmp_path):
    """One msrun launch (tests/parallel/tp_matrix.py, branch tp19) over every row whose tp cell is a test, on the
    first tp cell; each cell then reads its row's result."""
    if not _TP_RESULTS:
        rows = {name: row_folders(name) for name, r in ROWS.items() if r.cell("tp").kind == "test"}
        _TP_RESULTS.update(import_object("tests.parallel.tp_matrix:run_tp_matrix")(rows, tmp_path))
    result = _TP_RESULTS[row.name]
    if isinstance(result, BaseException):
        raise result
    assert result is True or result == "pass" or getattr(result, "ok", False), result


CHECKS = {"load": check_load, "forward": check_forward, "generate": check_generate, "gguf": check_gguf,
          "seq_cls": check_seq_cls, "train": check_train, "lora": check_lora, "tp": check_tp}


# llama.cpp tensors of an architecture transformers' GGUF loader lists but leaves unread (the gpt_oss row's n/a
# reason), with the names its own processor expects instead (which it turns into keys the model lacks)
_HF_GGUF_LOST = {"gpt-oss": {"blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight",
                             "blk.0.attn_sinks.weight", "blk.0.ffn_gate_projs.weight", "blk.0.ffn_up_projs.weight",
                             "blk.0.ffn_down_projs.weight"}}


def _hf_gguf_lost(row):
    """Which of the architecture's tensor names transformers' GGUF loader (its name map and tensor processor, run
    on a meta-device model of the row) turns into no parameter of the model."""
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map)

    # one layer (the names are layer 0's): HF's name map is rebuilt for every submodule, per layer
    config = getattr(transformers, row.config_class)(**{**row.kwargs, "num_hidden_layers": 1, "vocab_size": 128})
    with torch.device("meta"):
        model = getattr(transformers, row.model_class)(config)
    processor = TENSOR_PROCESSORS.get(row.gguf_arch, TensorProcessor)(config=config.to_dict())
    mapping, params = get_gguf_hf_weights_map(model, processor), set(model.state_dict())
    lost = set()
    for name in _HF_GGUF_LOST[row.gguf_arch]:
        parsed = {"tensors": {}}
        result = processor.process(weights=np.zeros((config.num_local_experts, 2, 2), np.float32), name=name,
                                   tensor_key_mapping=mapping, parsed_parameters=parsed)
        produced = set(parsed["tensors"]) | ({mapping[result.name]} if result.name in mapping else set())
        if not produced & params:
            lost.add(name)
    return lost


def check_not_applicable(row, capability):
    """An n/a cell's reason must still hold: transformers has no such class or GGUF architecture."""
    import transformers
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if capability == "gguf":  # transformers reads a GGUF architecture both it and the `gguf` package know
        from gguf.constants import MODEL_ARCH_NAMES

        names = {row.model_type, row.model_type.replace("_", "")}
        hf = {name.replace("_", "") for name in GGUF_SUPPORTED_ARCHITECTURES}
        readable = {name for name in names if name.replace("_", "") in hf and name in MODEL_ARCH_NAMES.values()}
        assert not readable, readable
        if row.gguf_arch in _HF_GGUF_LOST:  # an architecture HF lists but cannot really read: still so
            assert _hf_gguf_lost(row) == _HF_GGUF_LOST[row.gguf_arch]
    elif capability == "seq_cls":
        if row.remote:
            assert row.model_type not in transformers.CONFIG_MAPPING
        else:
            assert not hasattr(transformers, row.architecture.replace("ForConditionalGeneration",
                                                                      "ForSequenceClassification"))
    elif capability == "tp":  # transformers has no tensor-parallel plan for the family
        config_class = transformers.CONFIG_MAPPING[row.model_type]
        assert getattr(config_class, "base_model_tp_plan", None) is None
    else:
        raise AssertionError(f"no check for an n/a {capability} cell")


def check_nodes(cell):
    """Cells covered by existing tests: each node id names a test file and a test function in it."""
    for node in cell.nodes:
        path, _, function = node.partition("::")
        full = os.path.join(_ROOT, path)
        assert os.path.isfile(full), node
        if function:
            with open(full) as f:
                names = {n.name for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
            assert function in names, node


@pytest.mark.parametrize("name, capability", list(_params()))
def test_cell(name, capability, tmp_path):
    row = ROWS[name]
    cell = row.cell(capability)
    if cell.kind == "na":
        check_not_applicable(row, capability)
    elif cell.kind == "nodes":
        check_nodes(cell)
    else:
        CHECKS[capability](row, tmp_path)


def test_docs_table_is_generated_from_the_matrix():
    """docs/models.md's table is `python -m tests.models.matrix --write-docs`'s output, so it cannot drift."""
    with open(matrix.DOCS) as f:
        assert matrix.docs_section(f.read()) == matrix.docs_table()
