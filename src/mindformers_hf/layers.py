"""Basic layers with HF parameter names (`weight`, `bias`) built on the fast classic CPU kernels.

`ops.MatMul(transpose_b=True)` on a 2-D view is 10-35x faster in PyNative than `mint.nn.Linear` on this
CPU, and the HF weight layout [out, in] is exactly what transpose_b expects.
"""
import contextlib
import contextvars

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.common.initializer import Zero

from . import ops as fused
from .compiled_layers import compile_mode, jitted
from .ops.registry import eager
from .utils import activation_dtype, warn_once


_SKIP_INIT = [False]


@contextlib.contextmanager
def no_init_weights():
    """Inside this block parameters are created as zeros: from_pretrained overwrites them anyway, and
    sampling random values for billions of weights would cost a minute for nothing."""
    saved = _SKIP_INIT[0]
    _SKIP_INIT[0] = True
    try:
        yield
    finally:
        _SKIP_INIT[0] = saved


def new_parameter(shape, dtype, init="zeros", std=0.02):
    """A parameter filled by `init`: 'zeros', 'ones' or 'normal' (HF's initializer_range)."""
    if _SKIP_INIT[0]:
        # A lazily initialised tensor allocates nothing: load_weights' set_data brings the only copy,
        # so loading peaks at about one model, not a zero-filled model plus the loaded one.
        return Parameter(Tensor(shape=tuple(shape), dtype=dtype, init=Zero()))
    if init == "normal":
        data = np.random.normal(0.0, std, size=shape).astype(np.float32)
    elif init == "ones":
        data = np.ones(shape, np.float32)
    else:
        data = np.zeros(shape, np.float32)
    return Parameter(Tensor(data).astype(dtype) if dtype != ms.float32 else Tensor(data))


def recomputes(layer):
    """Whether a decoder layer recomputes its activations in the backward pass: activation checkpointing is on
    for it (PreTrainedModel.activation_checkpointing_enable sets `layer.gradient_checkpointing`) and it is
    training."""
    return bool(getattr(layer, "gradient_checkpointing", False)) and layer.training


class _Jitted(nn.Cell):
    """A layer's construct under `ms.jit` (compiled_layers.py's "jit" mode) as a Cell, for `ms.recompute`."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, *args):
        return self.fn(*args)


def call_layer(layer, *args, past_key_values=None):
    """layer(*args, past_key_values), through `mindspore.recompute` when the layer recomputes, and under
    `ms.jit` inside a `compiled_layers(model, "jit")` block. A recomputed layer writes no cache (it would write
    twice), as transformers' checkpointed layers drop theirs."""
    run = jitted(layer) if compile_mode(layer) == "jit" else layer
    if not recomputes(layer):
        return run(*args, past_key_values)
    if past_key_values is not None:
        warn_once("`past_key_values` / use_cache=True is incompatible with gradient checkpointing in training: "
                  "the checkpointed layers do not fill the cache")
    return ms.recompute(layer if run is layer else _Jitted(run), *args, None)


class Linear(nn.Cell):
    def __init__(self, in_features, out_features, bias=False, dtype=ms.float32, init="normal", std=0.02):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = new_parameter((out_features, in_features), dtype, init, std)
        self.bias = new_parameter((out_features,), dtype, "zeros") if bias else None

    def construct(self, x):
        shape = x.shape
        y = fused.linear(x.reshape(-1, shape[-1]), self.weight)  # bf16 weights on CPU: float32 out
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(shape[:-1] + (self.out_features,))


# Off inside compiled steps (generation/compile.py): a trace must not read tensor values on the host.
_INDEX_CHECKS = contextvars.ContextVar("mindformers_hf_index_checks", default=True)


@contextlib.contextmanager
def no_index_checks():
    """Inside this block (this thread only) embeddings do not read their indices on the host."""
    token = _INDEX_CHECKS.set(False)
    try:
        yield
    finally:
        _INDEX_CHECKS.reset(token)


class IndexDtypeError(TypeError, RuntimeError):
    """Float (or bool) indices into an embedding. torch raises RuntimeError for them; TypeError is Python's
    name for a wrong type: either `except` catches this."""


def check_indices(indices, rows, index_name="token id"):
    """torch's embedding checks, which HF scripts meet as errors: integer indices, each in [0, rows). The range
    is read on the host (a MindSpore gather returns zeros or fails deep in C++ instead): in eager mode only,
    where it costs one small copy -- a graph cannot raise."""
    if indices.dtype not in mstype.int_type + mstype.uint_type:
        raise IndexDtypeError(f"{index_name}s must be integers, got {indices.dtype}")
    if not (eager(indices) and _INDEX_CHECKS.get()) or indices.size == 0:
        return
    values = indices.asnumpy()
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= rows:
        raise IndexError(f"{index_name} {low if low < 0 else high} is out of range: the embedding has {rows} rows "
                         f"(valid ids are 0..{rows - 1})")


def replace_rows(inputs_embeds, slots, features):
    """inputs_embeds [B, S, E] with the rows at flat positions `slots` (host ints, B * S numbering, in order)
    replaced by `features` (N rows of E, N = len(slots)): HF's masked_scatter of image features into a prompt's
    embeddings, as one gather from [embeddings; features] (a float scatter has no CPU kernel for every dtype)."""
    bsz, seq, width = inputs_embeds.shape
    index = np.arange(bsz * seq)
    index[np.asarray(slots, np.int64)] = bsz * seq + np.arange(len(slots))
    table = ops.cat((inputs_embeds.reshape(-1, width), features.reshape(-1, width).astype(inputs_embeds.dtype)), 0)
    return ops.gather(table, ms.Tensor(index.astype(np.int32)), 0).reshape(bsz, seq, width)


class Embedding(nn.Cell):
    def __init__(self, num_embeddings, embedding_dim, dtype=ms.float32, init="normal", std=0.02,
                 index_name="token id"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.index_name = index_name  # what the rows are indexed by, for the out-of-range error
        self.weight = new_parameter((num_embeddings, embedding_dim), dtype, init, std)

    def construct(self, input_ids):
        check_indices(input_ids, self.num_embeddings, self.index_name)
        # bf16 weights on CPU: the gathered rows widened to float32, the dtype the model computes in
        return fused.embedding(self.weight, input_ids, activation_dtype(self.weight.dtype))


class LayerNorm(nn.Cell):
    """torch.nn.LayerNorm over the last axis, with HF's `weight` / `bias` names."""

    def __init__(self, hidden_size, eps=1e-5, dtype=ms.float32):
        super().__init__()
        self.weight = new_parameter((hidden_size,), dtype, "ones")
        self.bias = new_parameter((hidden_size,), dtype, "zeros")
        self.eps = eps
        self._layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        weight, bias = self.weight, self.bias
        if weight.dtype != x.dtype:  # bf16 weights on CPU, float32 activations
            weight, bias = fused.widen(weight, x.dtype), fused.widen(bias, x.dtype)
        return self._layer_norm(x, weight, bias)[0]
