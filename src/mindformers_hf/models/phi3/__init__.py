"""Phi-3 / Phi-3.5 / Phi-4-mini: LLaMA with fused `qkv_proj` and `gate_up_proj` weights.

The fused layouts stay fused under HF's own names, so loading and save_pretrained need no renaming table.
LongRoPE and partial_rotary_factor come from the config.
"""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("phi3", "Phi3", DecoderVariant(fused_qkv=True, fused_gate_up=True))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
