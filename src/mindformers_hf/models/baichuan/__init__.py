"""Baichuan / Baichuan2 (`BaichuanForCausalLM`, `BaiChuanForCausalLM`), read natively: LLaMA with q/k/v fused as
`W_pack`, ALiBi instead of rotary on the 13B models and Baichuan2's NormHead (modeling_baichuan.py)."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("baichuan", "Baichuan",
                DecoderVariant(fused_qkv=True,
                               attention="mindformers_hf.models.baichuan.modeling_baichuan:BaichuanAttention"),
                module=".modeling_baichuan", heads=(), config=".configuration_baichuan:BaichuanConfig",
                architectures=("BaichuanForCausalLM", "BaiChuanForCausalLM"),
                exports={"alibi_slopes": ".modeling_baichuan"})
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
