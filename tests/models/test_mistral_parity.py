"""Mistral parity against HF transformers on tiny random checkpoints HF itself wrote."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the family matrix's row has a window of 4 under an 11-token prompt and the decode past it
    "no_window": dict(sliding_window=None),
    "head_dim": dict(head_dim=24, sliding_window=6),  # Mistral-Nemo sets head_dim != hidden / heads
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mistral_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "MistralConfig", "MistralForCausalLM", **VARIANTS[variant])
    assert_family_parity(folder, tmp_path / "ours", "MistralForCausalLM", length=11)
