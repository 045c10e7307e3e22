"""Qwen3 parity against HF transformers on tiny random checkpoints HF itself wrote."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the default case is the family matrix's row (tests/models/matrix.py)
    "head_dim_and_bias": dict(head_dim=24, attention_bias=True),  # q/k norms act on head_dim, not hidden/heads
    "sliding_layers": dict(head_dim=16, use_sliding_window=True, sliding_window=4, max_window_layers=1),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_qwen3_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "Qwen3Config", "Qwen3ForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "Qwen3ForCausalLM")
    attn = ours.model.layers[0].self_attn
    assert tuple(attn.q_norm.weight.shape) == (attn.head_dim,)
