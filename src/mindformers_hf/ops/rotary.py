"""Rotary position embedding on q and k: reference, CPU kernel (csrc/rotary.cc), Ascend built-in."""
import mindspore as ms
from mindspore import ops

from . import reference, registry
from .cpu_build import CustomKernel


def _f32(x):
    return x if x.dtype == ms.float32 else x.astype(ms.float32)


def _swap12(shape):
    return (shape[0], shape[2], shape[1], shape[3])


def _rope_kernels(layout):
    """(forward on [B, heads, S, D], forward reading [B, S, heads, D]) for one pairing layout. Both write
    [B, heads, S, D]; both use the same backward kernel, whose gradients the second hands back swapped."""
    backward = CustomKernel("rotary", f"rope_{layout}_bwd", lambda q, k, c, s: (q, k), lambda q, k, c, s: (q, k))

    def bprop(q, k, cos, sin, out, dout):
        # cos/sin come from fixed frequencies (HF keeps inv_freq a buffer): no gradient flows to them
        dq, dk = backward.op(dout[0], dout[1], cos, sin)
        return dq, dk, ops.zeros_like(cos), ops.zeros_like(sin)

    def bprop_bshd(q, k, cos, sin, out, dout):
        dq, dk = backward.op(dout[0], dout[1], cos, sin)
        return dq.swapaxes(1, 2), dk.swapaxes(1, 2), ops.zeros_like(cos), ops.zeros_like(sin)

    return (CustomKernel("rotary", f"rope_{layout}_fwd", lambda q, k, c, s: (q, k), lambda q, k, c, s: (q, k), bprop),
            CustomKernel("rotary", f"rope_{layout}_bshd_fwd", lambda q, k, c, s: (_swap12(q), _swap12(k)),
                         lambda q, k, c, s: (q, k), bprop_bshd))


_rope_half, _rope_half_bshd = _rope_kernels("half")
_rope_interleaved, _rope_interleaved_bshd = _rope_kernels("interleaved")


def swapped_view_base(x):
    """x.swapaxes(1, 2) when x is a PyNative view of a contiguous [B, S, N, D] tensor swapped to [B, N, S, D]
    (how the models hand q/k/v to rotary and attention), else None. Passing the view to a Custom op would
    make MindSpore copy it first, which costs more than the op (about 1.4 ms for SmolLM2's q at S=512).
    Only prefill-sized inputs qualify; under a graph (jit) `is_contiguous` is not available, so there the
    answer is None (both paths compute the same values)."""
    if x.ndim != 4 or x.shape[2] == 1 or not registry.eager(x):
        return None
    if x.is_contiguous():
        return None
    base = x.swapaxes(1, 2)
    return base if base.is_contiguous() else None


def apply_rotary_pos_emb_cpu(q, k, cos, sin, interleaved=False):
    rot = cos.shape[-1]
    if cos.ndim != 3 or rot % 2 or rot > q.shape[-1] or cos.shape[0] not in (1, q.shape[0]) or q.ndim != 4:
        return reference.apply_rotary_pos_emb(q, k, cos, sin, interleaved)
    q_base, k_base = swapped_view_base(q), swapped_view_base(k)
    if q_base is not None and k_base is not None:
        kernel = _rope_interleaved_bshd if interleaved else _rope_half_bshd
        q, k = q_base, k_base
    else:
        kernel = _rope_interleaved if interleaved else _rope_half
    q_out, k_out = kernel.op(_f32(q), _f32(k), _f32(cos), _f32(sin))
    if q.dtype != ms.float32:
        q_out, k_out = q_out.astype(q.dtype), k_out.astype(k.dtype)
    return q_out, k_out


def apply_rotary_pos_emb_ascend(q, k, cos, sin, interleaved=False):
    """`ops.rotary_position_embedding` (mode 0: rotate_half, 1: interleaved) on [B, N, S, D] tensors.

    Its limits (full-width rotary, D < 896; interleaved needs one cos for the batch) fall back to the reference.
    """
    rot, dim = cos.shape[-1], q.shape[-1]
    if rot != dim or dim >= 896 or (interleaved and cos.shape[0] != 1):
        return reference.apply_rotary_pos_emb(q, k, cos, sin, interleaved)
    if interleaved:  # the built-in wants frequency i at channels 2i and 2i+1
        cos = ops.stack((cos[..., :rot // 2], cos[..., :rot // 2]), -1).reshape(cos.shape)
        sin = ops.stack((sin[..., :rot // 2], sin[..., :rot // 2]), -1).reshape(sin.shape)
    cos, sin = cos.expand_dims(1).astype(q.dtype), sin.expand_dims(1).astype(q.dtype)
    mode = 1 if interleaved else 0
    return ops.rotary_position_embedding(q, cos, sin, mode), ops.rotary_position_embedding(k, cos, sin, mode)


registry.register("apply_rotary_pos_emb", registry.REFERENCE, reference.apply_rotary_pos_emb)
registry.register("apply_rotary_pos_emb", "cpu", apply_rotary_pos_emb_cpu, "CPU", default=True,
                  available=_rope_half.available)
registry.register("apply_rotary_pos_emb", "ascend", apply_rotary_pos_emb_ascend, "Ascend", default=True)
