"""InternLM2 / InternLM2.5 (`InternLM2ForCausalLM`), read natively: LLaMA with q/k/v fused as `wqkv` in a
grouped layout, regrouped at load by modeling_internlm2.py's renaming table."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("internlm2", "InternLM2", DecoderVariant(fused_qkv=True), module=".modeling_internlm2", heads=(),
                config=".configuration_internlm2:InternLM2Config", architectures=("InternLM2ForCausalLM",))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
