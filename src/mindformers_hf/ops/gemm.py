"""The float32 linear layer: y = x [M, K] @ weight [N, K]^T, every projection of a float32 model on CPU.

Reference: MindSpore's MatMul(transpose_b=True).
CPU kernels (csrc/linear.cc): a few activation rows (decode) stream the weight through register-blocked dot
products; more rows run a packed GEMM (GotoBLAS-style) with an AVX-512 14 x 32 micro-kernel when the library is
built for a CPU with AVX-512F (-march=native), else a portable 6 x 16 one:
  - "cpu": the AVX-512 body where compiled, else the portable one;
  - "cpu_portable": the portable body everywhere (for the tests, and for comparison).
Backward (training): dx = dy @ w and dw = dy^T @ x run on the same GEMM core (`linear_dx` / `linear_dw`).

Which calls take the kernel is measured (benchmarks/ops.py --linear --model; docs/benchmarks.md "Float32 linear"):
the "cpu" implementation runs the kernel for at most `KERNEL_MAX_ROWS` activation rows (decode steps, small
batches: the weight-streaming path); for more rows the packed GEMM used 0-50% more CPU time than MatMul
(MindSpore's own CPU GEMM), so MatMul stays there. It is NOT on by default: on a loaded machine a compiled
SmolLM2-135M decode token used less CPU with it (91 -> 77 ms), but on a quiet one (load ~1, two off/on pairs of
fresh processes) it took longer in wall time (off 39.5 / 40.5 ms, on 49.2 / 47.3 ms per token; CPU 72 vs 66 ms):
what a user waits for is the wall time. `MINDFORMERS_HF_KERNELS=all` (or `use_kernels("all")`) turns it on.
"cpu_portable" runs its kernel at every size (tests and benchmarks).
"""
import ctypes

import mindspore as ms
from mindspore import ops

from . import registry
from .cpu_build import CustomKernel, library

KERNEL_MAX_ROWS = 8  # measured: see the module docstring (the kernel's own dot / GEMM split is also at 8)

_matmul_t = ops.MatMul(transpose_b=True)   # x [M, K] @ w [N, K]^T


def reference(x, weight):
    """x [M, K] @ weight [N, K]^T."""
    return _matmul_t(x, weight)


def _bprop_with(dx_kernel, dw_kernel):
    def bprop(x, weight, out, dout):
        return dx_kernel.op(dout, weight), dw_kernel.op(dout, x)
    return bprop


_dx = CustomKernel("linear", "linear_dx", lambda dy, w: [dy[0], w[1]], lambda dy, w: ms.float32)
_dw = CustomKernel("linear", "linear_dw", lambda dy, x: [dy[1], x[1]], lambda dy, x: ms.float32)
_dx_portable = CustomKernel("linear", "linear_dx_portable", lambda dy, w: [dy[0], w[1]], lambda dy, w: ms.float32)
_dw_portable = CustomKernel("linear", "linear_dw_portable", lambda dy, x: [dy[1], x[1]], lambda dy, x: ms.float32)
_fwd = CustomKernel("linear", "linear_fwd", lambda x, w: [x[0], w[0]], lambda x, w: ms.float32,
                    _bprop_with(_dx, _dw))
_fwd_portable = CustomKernel("linear", "linear_fwd_portable", lambda x, w: [x[0], w[0]], lambda x, w: ms.float32,
                             _bprop_with(_dx_portable, _dw_portable))


def uses_avx512():
    """Whether the "cpu" kernel was built with the AVX-512 micro-kernels; None if the library cannot be built."""
    path = library("linear")
    if path is None:
        return None
    return bool(ctypes.CDLL(path).linear_uses_avx512())


def _kernel(primitive, max_rows):
    def linear_kernel(x, weight):
        if x.dtype != ms.float32 or weight.dtype != ms.float32 or x.ndim != 2 or weight.ndim != 2:
            return reference(x, weight)
        rows = x.shape[0]
        if max_rows is not None and not (isinstance(rows, int) and 0 <= rows <= max_rows):
            return _matmul_t(x, weight)  # many rows, or a row count unknown while a graph is traced
        return primitive.op(x, weight)

    return linear_kernel


linear_cpu = _kernel(_fwd, KERNEL_MAX_ROWS)
linear_cpu_portable = _kernel(_fwd_portable, None)

registry.register("linear", registry.REFERENCE, reference)
registry.register("linear", "cpu", linear_cpu, "CPU", default=False, available=_fwd.available)
registry.register("linear", "cpu_portable", linear_cpu_portable, "CPU", default=False,
                  available=_fwd_portable.available)
