"""Gemma 3 text (`Gemma3ForCausalLM`, model_type gemma3_text) parity against HF transformers on tiny random
checkpoints HF itself wrote."""
import pytest

from mindformers_hf import AutoModel, AutoModelForCausalLM

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

# a sliding layer (window 4 under an 11-token prompt and the decode after it) and a global one, each with its
# own rotary base. Soft-capping is off in the released configs; when set, HF's file applies the final one and
# ignores the attention one (it never passes attn_logit_softcapping to its attention functions)
GEMMA3 = dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
              layer_types=["sliding_attention", "full_attention"],
              rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                               "full_attention": {"rope_type": "default", "rope_theta": 10000.0}})
VARIANTS = {  # the default case is the family matrix's row (tests/models/matrix.py)
    # Gemma 3 4B and up: linear rope scaling on the global layers only
    "linear_global_rope_softcap": dict(
        GEMMA3, layer_types=["full_attention", "sliding_attention"], attn_logit_softcapping=1.5,
        final_logit_softcapping=2.0,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 10000.0}}),
}


def test_bidirectional_attention_is_refused(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "hf", "Gemma3TextConfig", "Gemma3ForCausalLM",
                                use_bidirectional_attention=True, **GEMMA3)
    with pytest.raises(NotImplementedError, match="use_bidirectional_attention"):
        AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gemma3_text_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "Gemma3TextConfig", "Gemma3ForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "Gemma3ForCausalLM")
    assert type(AutoModel.from_pretrained(folder)).__name__ == "Gemma3TextModel"  # as HF's AutoModel builds
    attn = ours.model.layers[0].self_attn
    assert tuple(attn.q_norm.weight.shape) == (attn.head_dim,)
