"""The torch/numpy/MindSpore boundary.

Inputs arrive as numpy arrays, MindSpore tensors, torch tensors or Python lists; the models compute on
MindSpore tensors; outputs go back as the kind the caller passed in. torch is touched only when the
caller handed us a torch tensor, so `import mindformers_hf` never imports it.
"""
import numpy as np
import mindspore as ms

from .safetensors_io import float32_to_bf16_bits

NUMPY, MINDSPORE, TORCH = "np", "ms", "pt"


def is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def kind_of(x):
    """'np', 'ms', 'pt' or None for what the caller passed."""
    if x is None:
        return None
    if isinstance(x, ms.Tensor):
        return MINDSPORE
    if isinstance(x, np.ndarray):
        return NUMPY
    if is_torch_tensor(x):
        return TORCH
    return None


def first_kind(*values, default=MINDSPORE):
    for value in values:
        kind = kind_of(value)
        if kind is not None:
            return kind
    return default


def to_numpy(x):
    if x is None or isinstance(x, np.ndarray):
        return x
    if isinstance(x, ms.Tensor):
        if x.dtype == ms.bfloat16:
            x = x.float()
        return x.asnumpy()
    if is_torch_tensor(x):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def to_mindspore(x, dtype=None):
    """A MindSpore tensor from numpy / torch / list input (None passes through)."""
    if x is None:
        return None
    if not isinstance(x, ms.Tensor):
        array = to_numpy(x)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        x = ms.Tensor(np.ascontiguousarray(array))
    if dtype is not None and x.dtype != dtype:
        x = x.astype(dtype)
    return x


def to_kind(x, kind):
    """Convert a MindSpore tensor (or nested tuple/list of them) to the caller's kind."""
    if x is None or kind == MINDSPORE or kind is None:
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(to_kind(v, kind) for v in x)
    if not isinstance(x, ms.Tensor):
        return x
    array = to_numpy(x)
    if kind == NUMPY:
        return array
    import torch  # the caller passed torch, so torch is there

    return torch.from_numpy(np.ascontiguousarray(array))


# ---------------------------------------------------------------------- torch idioms on MindSpore tensors
# HF scripts handle what the model and the Trainer give them as torch tensors: parameters from
# named_parameters(), outputs, the tensors handed to preprocess_logits_for_metrics. MindSpore tensors
# already answer most of those idioms (numel, item, tolist, float, numpy, abs().max(), argmax(dim=),
# sum/mean(dim=), .data). The few they lack are added here, once, for every Tensor and Parameter:
# only names MindSpore does not define, or wrappers that change nothing MindSpore already accepts.
# (Graph-mode `ms.jit` resolves tensor methods from its own tables, so compiled code is unaffected.)


class _Size(int):
    """`tensor.size`: MindSpore's element count -- an int, as MindSpore code uses it -- that can also be
    called as torch's `size()` (the shape, a tuple) or `size(dim)` (one dimension)."""

    def __new__(cls, count, shape):
        size = int.__new__(cls, count)
        size.shape = shape
        return size

    def __call__(self, dim=None):
        return self.shape if dim is None else self.shape[dim]


def _from_torch_arg(value):
    """torch.float16 -> mindspore.float16, torch.device("cpu") -> "cpu"; anything else unchanged.
    torch is recognised by type name, so this never imports it."""
    kind = type(value)
    if kind.__module__ == "torch" and kind.__name__ == "dtype":
        name = str(value).rsplit(".", 1)[-1]
        return getattr(ms, {"bool": "bool_"}.get(name, name))
    if kind.__module__ == "torch" and kind.__name__ == "device":
        return value.type
    return value


def _install_torch_idioms():
    tensor = ms.Tensor
    if getattr(tensor, "_mindformers_hf_torch_idioms", False):
        return
    tensor._mindformers_hf_torch_idioms = True
    ms_to, ms_clone, ms_size = tensor.to, tensor.clone, tensor.size

    def detach(self):
        """A plain Tensor outside autodiff; like torch's it shares memory with `self` (in-place updates of
        a parameter show through it), so snapshots are taken with `.detach().clone()`."""
        return ms.ops.stop_gradient(self)

    def cpu(self):
        return self  # MindSpore places tensors by context, not per tensor

    def to(self, *args, **kwargs):
        return ms_to(self, *map(_from_torch_arg, args), **{k: _from_torch_arg(v) for k, v in kwargs.items()})

    def clone(self, *args, **kwargs):
        # the CPU backend has no Clone kernel ("The kernel Clone unregistered"); copy() makes the same copy
        if self.device == "CPU" and not args and not kwargs:
            return self.copy()
        return ms_clone(self, *args, **kwargs)

    for name, value in (("detach", detach), ("cpu", cpu), ("requires_grad", False)):
        if not hasattr(tensor, name):  # Parameter's own requires_grad property is untouched
            setattr(tensor, name, value)
    tensor.to = to
    tensor.clone = clone  # Parameter.clone (a new Parameter, MindSpore's meaning) is its own method
    tensor.size = property(lambda self: _Size(ms_size.fget(self), self.shape), doc=ms_size.__doc__)


_install_torch_idioms()


def to_parameter_data(array: np.ndarray, is_bf16_bits: bool, target: ms.Type) -> ms.Tensor:
    """A numpy array from a checkpoint as a MindSpore tensor of the parameter's dtype, copying at most once."""
    if target == ms.bfloat16:
        bits = array if is_bf16_bits else float32_to_bf16_bits(array.astype(np.float32))
        return ms.from_numpy(np.ascontiguousarray(bits)).view(ms.bfloat16)
    if is_bf16_bits:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    np_target = {ms.float32: np.float32, ms.float16: np.float16, ms.float64: np.float64}.get(target)
    if np_target is not None and array.dtype != np_target:
        array = array.astype(np_target)
    if not array.flags.writeable:  # a view of a read-only file mapping: in-place updates would crash
        array = array.copy()
    return ms.from_numpy(np.ascontiguousarray(array))
