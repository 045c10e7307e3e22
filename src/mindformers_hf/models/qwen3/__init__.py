"""Qwen3: LLaMA with an RMSNorm over head_dim on each query and key head, before rotary; sliding windows as
in Qwen2."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("qwen3", "Qwen3", DecoderVariant(qk_norm=True))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
