"""Gemma 2 parity against HF transformers on tiny random checkpoints HF itself wrote."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

# small soft-caps so that capping changes the logits; a window of 4 under an 11-token prompt and the decode
# after it; layer_types alternate sliding / global (HF's default)
GEMMA2 = dict(head_dim=16, tie_word_embeddings=True, query_pre_attn_scalar=24, sliding_window=4,
              attn_logit_softcapping=1.5, final_logit_softcapping=2.0)
VARIANTS = {  # the default case is the family matrix's row (tests/models/matrix.py)
    "no_softcap_global_first": dict(GEMMA2, attn_logit_softcapping=None, final_logit_softcapping=None,
                                    layer_types=["full_attention", "sliding_attention"]),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gemma2_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "Gemma2Config", "Gemma2ForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "Gemma2ForCausalLM")
    assert [layer.attention_type for layer in ours.model.layers] == ours.config.layer_types
