"""GLM-4-9B-chat-hf (`GlmForCausalLM`): LLaMA with interleaved partial rotary, q/k/v bias and fused
`gate_up_proj`; partial_rotary_factor (0.5 by default) comes from the config."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("glm", "Glm", DecoderVariant(o_bias=False, fused_gate_up=True, interleaved_rotary=True))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
