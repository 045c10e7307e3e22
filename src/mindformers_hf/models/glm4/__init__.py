"""GLM-4-0414 (`Glm4ForCausalLM`): GLM plus an RMSNorm on each sublayer's output before the residual add
(post_self_attn_layernorm / post_mlp_layernorm)."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("glm4", "Glm4", DecoderVariant(o_bias=False, fused_gate_up=True, interleaved_rotary=True,
                                               sandwich_norm=True))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
