"""GLM (`glm`, GLM-4-9B-chat-hf) and GLM4 (`glm4`, GLM-4-0414) parity against HF transformers."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the default cases (GLM with partial_rotary_factor 0.5, GLM4) are the family matrix's rows
    "glm_full_rotary": ("GlmConfig", "GlmForCausalLM", dict(head_dim=16, partial_rotary_factor=1.0)),
    "glm_no_bias": ("GlmConfig", "GlmForCausalLM", dict(head_dim=16, attention_bias=False)),
    "glm4_head_dim": ("Glm4Config", "Glm4ForCausalLM", dict(head_dim=24)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_glm_matches_hf(tmp_path, variant):
    config_class, model_class, overrides = VARIANTS[variant]
    folder = make_hf_checkpoint(tmp_path / "hf", config_class, model_class, **overrides)
    ours = assert_family_parity(folder, tmp_path / "ours", model_class)
    assert ours.model.layers[0].self_attn.o_proj.bias is None
