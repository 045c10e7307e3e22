"""SwiGLU activations: silu_mul(gate, up) and swiglu(x) on a fused gate_up output.

Reference, CPU kernel (csrc/silu_mul.cc) and, for swiglu, Ascend's built-in `ops.swiglu`. Ascend has no
two-input form, so silu_mul stays on the reference there (the graph compiler fuses the elementwise ops).
"""
import mindspore as ms
from mindspore import ops

from . import reference, registry
from .cpu_build import CustomKernel


def _f32(x):
    return x if x.dtype == ms.float32 else x.astype(ms.float32)


_silu_mul_bwd = CustomKernel("silu_mul", "silu_mul_bwd", lambda g, u, dy: (g, g), lambda g, u, dy: (g, g))


def _silu_mul_fwd_bprop(gate, up, out, dout):
    return _silu_mul_bwd.op(gate, up, dout)


_silu_mul_fwd = CustomKernel("silu_mul", "silu_mul_fwd", lambda g, u: g, lambda g, u: g, _silu_mul_fwd_bprop)


def silu_mul_cpu(gate, up):
    if gate.shape != up.shape:  # the kernel does not broadcast
        return reference.silu_mul(gate, up)
    y = _silu_mul_fwd.op(_f32(gate), _f32(up))
    return y if gate.dtype == ms.float32 else y.astype(gate.dtype)


def swiglu_cpu(x, dim=-1):
    gate, up = ops.chunk(x, 2, dim)
    return silu_mul_cpu(gate, up)


def swiglu_ascend(x, dim=-1):
    return ops.swiglu(x, dim)


registry.register("silu_mul", registry.REFERENCE, reference.silu_mul)
registry.register("silu_mul", "cpu", silu_mul_cpu, "CPU", default=True, available=_silu_mul_fwd.available)
registry.register("swiglu", registry.REFERENCE, reference.swiglu)
registry.register("swiglu", "cpu", swiglu_cpu, "CPU", default=True, available=_silu_mul_fwd.available)
registry.register("swiglu", "ascend", swiglu_ascend, "Ascend", default=True)
