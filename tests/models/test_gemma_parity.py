"""Gemma parity against HF transformers on tiny random checkpoints HF itself wrote."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the default case is the family matrix's row (tests/models/matrix.py)
    "head_dim_untied": dict(head_dim=24, tie_word_embeddings=False),  # head_dim != hidden / heads
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gemma_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "GemmaConfig", "GemmaForCausalLM", **VARIANTS[variant])
    assert_family_parity(folder, tmp_path / "ours", "GemmaForCausalLM")
