"""Phi-3 parity against HF transformers on tiny random checkpoints HF itself wrote.

The checkpoint's fused `qkv_proj` / `gate_up_proj` stay fused under HF's names; the round trip in
assert_family_parity checks save_pretrained writes exactly HF's tensor names.
"""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

_HALF_ROT = 8  # head_dim 16 -> 8 frequencies
VARIANTS = {  # the default case is the family matrix's row (tests/models/matrix.py)
    "sliding_window": dict(sliding_window=5),  # Phi-3-mini ships sliding_window=2047
    "partial_rotary": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.75}),  # Phi-4-mini
    # LongRoPE (Phi-3-128k, Phi-3.5): prompt (11) + decode beyond original_max_position_embeddings (8), so the
    # long factors take over mid-test; the short ones serve the shorter loss batch
    "longrope": dict(max_position_embeddings=64, original_max_position_embeddings=8,
                     rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                      "short_factor": [1.0 + 0.1 * i for i in range(_HALF_ROT)],
                                      "long_factor": [1.5 + 0.5 * i for i in range(_HALF_ROT)]}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_phi3_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "Phi3Config", "Phi3ForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "Phi3ForCausalLM")
    names = {name for name, _ in ours.named_parameters()}
    assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
