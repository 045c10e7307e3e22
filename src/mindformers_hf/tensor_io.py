"""The torch/numpy/MindSpore boundary.

Inputs arrive as numpy arrays, MindSpore tensors, torch tensors or Python lists; the models compute on
MindSpore tensors; outputs go back as the kind the caller passed in. torch is touched only when the
caller handed us a torch tensor, so `import mindformers_hf` never imports it.
"""
import numpy as np
import mindspore as ms

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
