"""Qwen2 (Qwen1.5/2/2.5) parity against HF transformers on tiny random checkpoints HF itself wrote."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the default case is the family matrix's row (tests/models/matrix.py)
    "tied": dict(tie_word_embeddings=True),  # Qwen2-0.5B/1.5B tie the head to the embedding
    # windows on from layer 1 (max_window_layers) and a prompt longer than the window
    "sliding_layers": dict(use_sliding_window=True, sliding_window=4, max_window_layers=1),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_qwen2_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "Qwen2Config", "Qwen2ForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "Qwen2ForCausalLM")
    attn = ours.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None


def test_qwen2_sliding_window_off_by_default(tmp_path):
    """HF's Qwen2Config nulls sliding_window unless use_sliding_window: a long prompt sees every key."""
    folder = make_hf_checkpoint(tmp_path / "hf", "Qwen2Config", "Qwen2ForCausalLM", sliding_window=4)
    ours = assert_family_parity(folder, tmp_path / "ours", "Qwen2ForCausalLM")
    assert ours.config.sliding_window is None
    assert [layer.attention_type for layer in ours.model.layers] == ["full_attention"] * 2
