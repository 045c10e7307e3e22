"""Attention with grouped KV heads, an additive mask (causal + padding) and a KV cache.

Reference: one batched matmul for the scores, softmax, one for the values (materialises [B, H, S, T]).
CPU kernel (csrc/attention.cc): blocked online softmax that keeps one block of scores per thread and skips
keys outside each row's allowed range, with a backward pass that rebuilds probabilities from the saved row
softmax statistics. Ascend: `ops.flash_attention_score` (float16/bfloat16 with value shaped as key; other
inputs use the reference).
"""
import mindspore as ms
from mindspore import ops

from . import reference, registry
from .cpu_build import CustomKernel
from .rotary import swapped_view_base

# Mask values below this are "not allowed" to the kernels (csrc/attention.cc kSkip, Ascend's boolean mask):
# exp(-1e4) is exactly 0 in a float32 softmax, so the result does not change.
MASKED_BELOW = -1e4


def _f32(x):
    return x if x.dtype == ms.float32 else x.astype(ms.float32)


def _attention_kernels(suffix, out_layout):
    """(forward, backward) kernels writing o as `out_layout(q shape, v shape)`: [B, H, S, Dv], or [B, S, H, Dv]
    for the _bshd kernels, which also take v (and give dv) as [B, T, KV, Dv]."""
    backward = CustomKernel("attention", "attention_bwd" + suffix, lambda q, k, v, m, s, o, l, do: (q, k, v),
                            lambda q, k, v, m, s, o, l, do: (q, k, v))

    def bprop(q, k, v, mask, scale, out, dout):
        dq, dk, dv = backward.op(q, k, v, mask, scale, out[0], out[1], dout[0])
        return dq, dk, dv, ops.zeros_like(mask), ops.zeros_like(scale)

    forward = CustomKernel("attention", "attention_fwd" + suffix,
                           lambda q, k, v, m, s: (out_layout(q, v), q[:3] + [2]),
                           lambda q, k, v, m, s: (q, ms.float32), bprop)
    return forward, backward


_attention_fwd, _attention_bwd = _attention_kernels("", lambda q, v: q[:3] + v[3:])
# PyNative prefill: v read through its swapped view, o written as [B, S, H, Dv] and returned as its swapped
# view, so the model's swap back to [B, S, H * Dv] is free
_attention_fwd_bshd, _ = _attention_kernels("_bshd", lambda q, v: [q[0], q[2], q[1], v[3]])


def causal_attention_cpu(q, k, v, mask, scale):
    bsz, q_len, kv_len = q.shape[0], q.shape[2], k.shape[2]
    if mask is None:
        mask = ops.zeros((1,), ms.float32)  # a 1-element mask tells the kernel there is none
    elif mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, bsz) or mask.shape[2:] != (q_len, kv_len):
        return reference.causal_attention(q, k, v, mask, scale)
    scale = ms.Tensor([scale], ms.float32)
    v_base = swapped_view_base(v) if q_len > 1 else None  # [B, T, KV, Dv] behind a view from the projection
    if v_base is not None:
        out = _attention_fwd_bshd.op(_f32(q), _f32(k), _f32(v_base), _f32(mask), scale)[0].swapaxes(1, 2)
    else:
        out = _attention_fwd.op(_f32(q), _f32(k), _f32(v), _f32(mask), scale)[0]
    return out if q.dtype == ms.float32 else out.astype(q.dtype)


def causal_attention_ascend(q, k, v, mask, scale):
    if q.dtype not in (ms.float16, ms.bfloat16) or v.shape != k.shape:  # the built-in wants value shaped as key
        return reference.causal_attention(q, k, v, mask, scale)
    attn_mask = None if mask is None else (mask < MASKED_BELOW).astype(ms.uint8)  # 1 = masked out
    return ops.flash_attention_score(q, k, v, q.shape[1], attn_mask=attn_mask, scalar_value=scale,
                                     input_layout="BNSD")


_paged_attention_fwd = CustomKernel("paged_attention", "paged_attention_fwd",
                                    lambda q, kc, vc, bt, m, s, bs: q[:3] + [vc[-1]],
                                    lambda q, kc, vc, bt, m, s, bs: q)


def paged_attention_cpu(q, key_cache, value_cache, block_tables, mask, scale, block_size=None):
    """csrc/paged_attention.cc reads keys and values through the block tables, from 4-d or flat pools alike.
    Float32 like every CPU kernel: low-precision pools are cast whole (the CPU model computes in float32, so its
    pools are float32)."""
    if mask.ndim != 4:
        return reference.paged_attention(q, key_cache, value_cache, block_tables, mask, scale, block_size)
    block_size = key_cache.shape[1] if key_cache.ndim == 4 else block_size
    out = _paged_attention_fwd.op(_f32(q), _f32(key_cache), _f32(value_cache), block_tables.astype(ms.int32),
                                  _f32(mask), ms.Tensor([scale], ms.float32), ms.Tensor([block_size], ms.int32))
    return out if q.dtype == ms.float32 else out.astype(q.dtype)


registry.register("causal_attention", registry.REFERENCE, reference.causal_attention)
registry.register("causal_attention", "cpu", causal_attention_cpu, "CPU", default=True,
                  available=_attention_fwd.available)
registry.register("causal_attention", "ascend", causal_attention_ascend, "Ascend", default=True)
registry.register("paged_attention", registry.REFERENCE, reference.paged_attention)
registry.register("paged_attention", "cpu", paged_attention_cpu, "CPU", default=True,
                  available=_paged_attention_fwd.available)
