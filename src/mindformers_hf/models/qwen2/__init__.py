"""Qwen2 (serves Qwen1.5, Qwen2, Qwen2.5): LLaMA with biases on q/k/v but not o_proj.

Sliding windows follow the config as transformers does: off unless `use_sliding_window`, then on for the
layers `layer_types` marks (from `max_window_layers`).
"""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("qwen2", "Qwen2", DecoderVariant(qkv_bias=True, o_bias=False))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
