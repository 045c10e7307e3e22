"""A linear layer over bfloat16 weights with float32 activations: y = x @ w^T, w held as bf16.

On CPU a model loaded with `dtype=bfloat16` keeps its weights in bf16 (half the memory, half the bytes a decode
step streams) and computes in float32: every projection goes through this op.

Reference: widen the weight to float32 and run float32's matmul (exact products of the bf16 weights).
CPU kernels (csrc/bf16_linear.cc), for a few activation rows (decode; `KERNEL_MAX_ROWS`) -- many rows (prefill,
training) are compute-bound: they widen the weight with the `bf16_widen` kernel (MindSpore's own bf16 cast on CPU
is ~15x slower) and run float32's GEMM:
  - "cpu": AVX-512 BF16 `vdpbf16ps` on activations split into two bf16 halves (about 16 mantissa bits) when the
    compiler targets a CPU with it (built with -march=native); else, with AVX2 and FMA, the weights widened in
    registers (a 16-bit shift) and float32 FMAs over 4 weight rows x 2 activation rows (no widening pass through
    a buffer: 1.2x faster SmolLM2 bf16 decode at batch 1, 1.4x at batch 8, on an AVX2 AMD EPYC); else the
    portable body;
  - "cpu_portable": bf16 -> float32 by a shift, then float32 FMAs (AVX2 / AVX-512 / scalar as compiled).
The gradient (training through bf16 weights) is the reference's: dx = dy @ widen(w), dw = (dy^T @ x) as bf16.
"""
import ctypes

import mindspore as ms
from mindspore import ops

from . import registry
from .cpu_build import CustomKernel, library

KERNEL_MAX_ROWS = 16  # above this many activation rows the float32 GEMM of the widened weight is faster

_matmul_t = ops.MatMul(transpose_b=True)   # x [M, K] @ w [N, K]^T
_matmul = ops.MatMul()                     # dy [M, N] @ w [N, K]
_matmul_ta = ops.MatMul(transpose_a=True)  # dy^T [N, M] @ x [M, K]


def reference(x, weight):
    """x [M, K] (float32) @ weight [N, K]^T with the weight widened to x's dtype."""
    return _matmul_t(x, weight.astype(x.dtype))


def _bprop(x, weight, out, dout):
    dx = _matmul(dout, _widen.op(weight))
    dw = _matmul_ta(dout, x).astype(weight.dtype)
    return dx, dw


def _shape(x, w):
    return [x[0], w[0]]


def _dtype(x, w):
    return ms.float32


def _widen_bprop(x, out, dout):
    return (dout.astype(x.dtype),)


_widen = CustomKernel("bf16_linear", "bf16_widen", lambda w: w, lambda w: ms.float32, _widen_bprop)
_fwd = CustomKernel("bf16_linear", "bf16_linear_fwd", _shape, _dtype, _bprop)
_fwd_portable = CustomKernel("bf16_linear", "bf16_linear_fwd_portable", _shape, _dtype, _bprop)


def uses_avx512_bf16():
    """Whether the "cpu" kernel was built with AVX-512 BF16 (`vdpbf16ps`); None if the library cannot be built."""
    path = library("bf16_linear")
    if path is None:
        return None
    return bool(ctypes.CDLL(path).bf16_linear_uses_avx512bf16())


def _kernel(primitive):
    def bf16_linear_kernel(x, weight):
        if weight.dtype != ms.bfloat16 or x.dtype != ms.float32:
            return reference(x, weight)
        if x.shape[0] > KERNEL_MAX_ROWS:
            return _matmul_t(x, _widen.op(weight))
        return primitive.op(x, weight)

    return bf16_linear_kernel


def to_float32(x):
    """x as float32 for a CPU kernel: bf16 through the widen kernel once it is built (`ensure_widen`), else a cast."""
    if x.dtype == ms.float32:
        return x
    if x.dtype == ms.bfloat16 and _widen.op is not None:
        return _widen.op(x)
    return x.astype(ms.float32)


def with_widen(available):
    """An `available` check for a CPU kernel that also builds the widen kernel its bf16 inputs go through."""
    def check():
        _widen.available()
        return available()
    return check


def _embedding_bprop(weight, ids, out, dout):
    dweight = ops.unsorted_segment_sum(dout, ids.astype(ms.int32), weight.shape[0]).astype(weight.dtype)
    return dweight, ops.zeros_like(ids)


_embedding = CustomKernel("bf16_linear", "bf16_embedding", lambda w, i: [i[0], w[1]], lambda w, i: ms.float32,
                          _embedding_bprop)


def embedding_reference(weight, ids):
    """Rows `ids` [N] of a bf16 table [V, H] as float32 [N, H] (the table widened, then gathered: MindSpore's CPU
    Gather has no bfloat16)."""
    return ops.gather(weight.astype(ms.float32), ids, 0)


def embedding_cpu(weight, ids):
    return _embedding.op(weight, ids)


def widen_reference(x):
    return x.astype(ms.float32)


def widen_cpu(x):
    return _widen.op(x)


registry.register("bf16_widen", registry.REFERENCE, widen_reference)
registry.register("bf16_widen", "cpu", widen_cpu, "CPU", default=True, available=_widen.available)
registry.register("bf16_embedding", registry.REFERENCE, embedding_reference)
registry.register("bf16_embedding", "cpu", embedding_cpu, "CPU", default=True, available=_embedding.available)
registry.register("bf16_linear", registry.REFERENCE, reference)
registry.register("bf16_linear", "cpu", _kernel(_fwd), "CPU", default=True, available=_fwd.available)
registry.register("bf16_linear", "cpu_portable", _kernel(_fwd_portable), "CPU", default=False,
                  available=_fwd_portable.available)
