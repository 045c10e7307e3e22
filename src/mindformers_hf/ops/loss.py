"""Cross-entropy per row of [N, V] logits (the language-model loss), forward and backward.

Reference: MindSpore's `ops.cross_entropy(reduction="none")` (log_softmax, gather and their backward, each a
pass writing an [N, V] temporary) -- also what runs on Ascend, where it is a built-in kernel. CPU kernel
(csrc/cross_entropy.cc): one read of each row for the forward (max, then log-sum-exp while the row is in
cache), one read and one write for the backward, rebuilding the softmax from the saved log-sum-exp. For
SmolLM2's 49k vocabulary at 4 x 256 tokens, forward + backward went from 2.5 s to 0.14 s on this 2-core CPU
(torch: 0.26 s); `benchmarks/train.py --breakdown` shows the whole step.
"""
import mindspore as ms
from mindspore import ops

from . import reference, registry
from .cpu_build import CustomKernel

_cross_entropy_bwd = CustomKernel("cross_entropy", "cross_entropy_bwd",
                                  lambda x, y, i, lse, dloss: x, lambda x, y, i, lse, dloss: x)


def _cross_entropy_bprop(logits, labels, ignore, out, dout):
    dlogits = _cross_entropy_bwd.op(logits, labels, ignore, out[1], dout[0])
    return dlogits, ops.zeros_like(labels), ops.zeros_like(ignore)


_cross_entropy_fwd = CustomKernel("cross_entropy", "cross_entropy_fwd",
                                  lambda x, y, i: (x[:1], x[:1]), lambda x, y, i: (x, x), _cross_entropy_bprop)


def cross_entropy_cpu(logits, labels, ignore_index=-100):
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        return reference.cross_entropy(logits, labels, ignore_index)
    if logits.dtype != ms.float32:
        logits = logits.astype(ms.float32)
    labels = labels.astype(ms.int32)
    if registry.eager(labels):  # (a graph cannot read labels on the host: there the kernel's failure is the error)
        _check_labels(labels.asnumpy(), logits.shape[1], ignore_index)
    return _cross_entropy_fwd.op(logits, labels, ms.Tensor([ignore_index], ms.int32))[0]


def _check_labels(labels, vocab, ignore_index):
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab))
    if bad.any():
        raise IndexError(f"cross_entropy: label {int(labels[bad][0])} is outside [0, {vocab}) and is not the "
                         f"ignore_index {ignore_index}")


registry.register("cross_entropy", registry.REFERENCE, reference.cross_entropy)
registry.register("cross_entropy", "cpu", cross_entropy_cpu, "CPU", default=True, available=_cross_entropy_fwd.available)
