"""Qwen v1 (`QWenLMHeadModel`: Qwen-1.8B/7B/14B/72B and -Chat), read natively: Qwen2 under GPT-2-like names,
`c_attn` fusing q/k/v with a bias and a half-width MLP (modeling_qwen.py)."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("qwen", "QWen",
                DecoderVariant(fused_qkv=True, qkv_bias=True, mlp="mindformers_hf.models.qwen.modeling_qwen:qwen_mlp"),
                module=".modeling_qwen", causal_lm="LMHeadModel", heads=(), config=".configuration_qwen:QWenConfig",
                architectures=("QWenLMHeadModel",))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
