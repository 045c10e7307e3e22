"""tp=2 across two processes started by msrun, every family in one launch (tp_matrix.py): logits equal the
single-process model's and HF's, each rank reads only its slices of the sharded tensors, greedy decoding matches
and gradients are the slices of the single-process ones.

Rows: the HF-native families whose transformers config has a `base_model_tp_plan`, each on the smallest shapes
(hidden 64, 2 layers, 4 heads / 2 KV heads), and the remote formats written by tests/models/test_remote_formats.py
(renaming tables, fused qkv and gate_up, a permuted wqkv, ALiBi slopes per head rank). GPT-2 has no HF plan:
its row checks the layout we declare (Conv1D weights, transposed). The launch runs once per session."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.parallel.tp_matrix import check_tp_row, run_tp_matrix

_MOE = dict(num_experts_per_tok=2, moe_intermediate_size=32)
# family: (config class, model class, overrides, plan); vocab 128, hidden 64, 2 layers, 4 heads, 2 KV heads
HF_ROWS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, "auto"),
    # tied embeddings, so the vocab-parallel embedding also serves as the parallel LM head
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}, "auto+vocab"),
    # experts stacked at load (per-expert keys in the file), gated shared expert, one dense layer
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(_MOE, num_experts=4, shared_expert_intermediate_size=48, norm_topk_prob=True,
                       mlp_only_layers=[0]), "auto"),
}


def _hf_row(root, name):
    config, cls, overrides, plan = HF_ROWS[name]
    folder = make_hf_checkpoint(root / name, config, cls, **overrides)
    return folder, folder, plan


def _remote_row(root, name):
    """The remote-format folder, with its HF-native twin as the oracle."""
    from tests.models import test_remote_formats as remote

    folder, _, hf = getattr(remote, f"{name}_checkpoint")(root / name)
    return folder, lambda ids, mask: remote.hf_forward(hf, ids, mask).logits.numpy(), "auto"


REMOTE_ROWS = ("chatglm", "internlm2")
ROWS = sorted(HF_ROWS) + list(REMOTE_ROWS)


@pytest.fixture(scope="module")
def tp_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_matrix")
    rows = {name: _hf_row(root, name) for name in HF_ROWS}
    rows.update({name: _remote_row(root, name) for name in REMOTE_ROWS})
    return run_tp_matrix(rows, root / "out")


@pytest.mark.parametrize("family", ROWS)
def test_tp2_matches_single_process_and_hf(tp_results, family):
    check_tp_row(tp_results[family])
