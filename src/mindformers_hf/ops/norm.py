"""RMSNorm and residual-add + RMSNorm: reference, CPU kernel (csrc/norm.cc), Ascend built-ins."""
import mindspore as ms
from mindspore import ops

from . import reference, registry
from .cpu_build import CustomKernel
from .bf16 import to_float32 as _f32, with_widen


def _rows(shape):
    rows = 1
    for size in shape[:-1]:
        rows *= size
    return (rows,)


def _scalar(value):
    return ms.Tensor([value], ms.float32)


# ----------------------------------------------------------------------------------------- CPU kernel
_rms_norm_bwd = CustomKernel("norm", "rms_norm_bwd", lambda x, w, r, dy: (x, w), lambda x, w, r, dy: (x, w))


def _rms_norm_fwd_bprop(x, w, eps, out, dout):
    dx, dw = _rms_norm_bwd.op(x, w, out[1], dout[0])
    return dx, dw, ops.zeros_like(eps)


def _add_rms_norm_fwd_bprop(x, residual, w, eps, out, dout):
    # d(sum) = the norm's input gradient + the gradient flowing into the returned sum itself
    d_sum, dw = _rms_norm_bwd.op(out[1], w, out[2], dout[0])
    d_sum = d_sum + dout[1]
    return d_sum, d_sum, dw, ops.zeros_like(eps)


_rms_norm_fwd = CustomKernel("norm", "rms_norm_fwd", lambda x, w, e: (x, _rows(x)),
                             lambda x, w, e: (x, ms.float32), _rms_norm_fwd_bprop)
_add_rms_norm_fwd = CustomKernel("norm", "add_rms_norm_fwd", lambda x, r, w, e: (x, x, _rows(x)),
                                 lambda x, r, w, e: (x, x, ms.float32), _add_rms_norm_fwd_bprop)


def rms_norm_cpu(x, weight, eps):
    y = _rms_norm_fwd.op(_f32(x), _f32(weight), _scalar(eps))[0]
    return y if x.dtype == ms.float32 else y.astype(x.dtype)


def add_rms_norm_cpu(x, residual, weight, eps):
    y, summed, _ = _add_rms_norm_fwd.op(_f32(x), _f32(residual), _f32(weight), _scalar(eps))
    if x.dtype != ms.float32:
        y, summed = y.astype(x.dtype), summed.astype(x.dtype)
    return y, summed


# ----------------------------------------------------------------------------------------- Ascend
def rms_norm_ascend(x, weight, eps):
    return ops.rms_norm(x, weight, eps)[0]


def add_rms_norm_ascend(x, residual, weight, eps):
    y, _, summed = ops.add_rms_norm(x, residual, weight, eps)
    return y, summed


registry.register("rms_norm", registry.REFERENCE, reference.rms_norm)
registry.register("rms_norm", "cpu", rms_norm_cpu, "CPU", default=True, available=with_widen(_rms_norm_fwd.available))
registry.register("rms_norm", "ascend", rms_norm_ascend, "Ascend", default=True)
registry.register("add_rms_norm", registry.REFERENCE, reference.add_rms_norm)
registry.register("add_rms_norm", "cpu", add_rms_norm_cpu, "CPU", default=True, available=with_widen(_add_rms_norm_fwd.available))
registry.register("add_rms_norm", "ascend", add_rms_norm_ascend, "Ascend", default=True)
