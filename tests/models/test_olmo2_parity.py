"""OLMo 2 parity against HF transformers on tiny random checkpoints HF itself wrote: norms on the sublayers'
outputs only, q/k RMSNorms over the whole projections (GQA: k_norm is narrower than q_norm)."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the default case is the family matrix's row (tests/models/matrix.py)
    "bias_tied": dict(attention_bias=True, tie_word_embeddings=True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_olmo2_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "Olmo2Config", "Olmo2ForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "Olmo2ForCausalLM")
    assert ours.model.layers[0].self_attn.k_norm.weight.shape == (32,)  # KV * head_dim
    assert ours.model.compiles_layers()
