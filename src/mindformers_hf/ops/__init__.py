"""Fused-op entry points called by model files.

Each op here is the plain MindSpore reference implementation (classic `mindspore.ops`, which have CPU
kernels). Faster kernels (Ascend built-ins, CPU custom kernels) are alternatives to these functions,
picked by a registry; model code only ever calls the names below.
"""
from .reference import apply_rotary_pos_emb, causal_attention, rms_norm, silu_mul, rotate_half

__all__ = ["apply_rotary_pos_emb", "causal_attention", "rms_norm", "silu_mul", "rotate_half"]
