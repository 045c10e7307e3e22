"""Megatron/vLLM-style tensor-parallel layers with HF parameter names (`weight`, `bias`).

Each layer holds this rank's rows (column parallel, vocab parallel) or columns (row parallel) of the HF
tensor, listed as index ranges into the full tensor, so a fused tensor (qkv, gate_up) is sharded per
sub-block and a replicated KV head is just a range that two ranks share. `weight_loader(param, source)`
narrows the checkpoint tensor to those ranges; `source` reads slices lazily (weight_loading.py) or wraps
a full numpy array. `partial(x)` is this rank's contribution before any collective, so one process can
check the split against the unsharded layer without launching ranks.
"""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from .. import ops as fused
from ..layers import check_indices, new_parameter
from ..tensor_io import to_parameter_data
from ..weight_loading import ArraySource


class _GroupSum(nn.Cell):
    """A sum over the group in the forward pass, the backward pass or both; the identity in the other one.
    forward only: a row-parallel output (the backward is the identity: every rank already holds the full gradient);
    backward only: Megatron's copy-to-TP-region (each rank's shard contributes part of d(loss)/d(input));
    both: a statistic every rank's output depends on (the sum of squares of a norm over a sharded projection),
    whose gradient each rank holds only the part of its own outputs."""

    def __init__(self, group, forward, backward):
        super().__init__()
        self.op = ops.AllReduce(ops.ReduceOp.SUM, group)
        self.sum_forward, self.sum_backward = forward, backward

    def construct(self, x):
        return self.op(x) if self.sum_forward else x

    def bprop(self, x, out, dout):
        return (self.op(dout) if self.sum_backward else dout,)


def _group_sum(mesh, forward, backward):
    """A _GroupSum over the mesh's group; the identity in a world of one (no group)."""
    return _identity if mesh.group is None else _GroupSum(mesh.group, forward, backward)


class _GatherLastDim(nn.Cell):
    """[N, C] per rank -> [N, size * C] in rank order; backward keeps this rank's columns (the gradient
    of replicated logits is the same on every rank, so no reduce-scatter is needed)."""

    def __init__(self, group, rank, size):
        super().__init__()
        from .mesh import is_world_group

        # CPU's AllGather runs over the world group only: over a dp x tp mesh's sub-group, gather by summing
        # zero-padded buffers (each rank fills its own block)
        self.by_sum = not is_world_group(group) and ms.get_context("device_target") == "CPU"
        self.op = ops.AllReduce(ops.ReduceOp.SUM, group) if self.by_sum else ops.AllGather(group)
        self.rank, self.size = rank, size

    def construct(self, x):
        n, c = x.shape
        if self.by_sum:
            blocks = [x if i == self.rank else ops.zeros_like(x) for i in range(self.size)]
            return self.op(ops.cat(blocks, 1))                                  # [N, size * C]
        gathered = self.op(x)                                                   # [size * N, C], rank-major
        return gathered.reshape(self.size, n, c).permute(1, 0, 2).reshape(n, self.size * c)

    def bprop(self, x, out, dout):
        c = x.shape[1]
        return (dout[:, self.rank * c:(self.rank + 1) * c],)


def _identity(x):
    return x


def even_range(full, rank, size, pad=False):
    """Rank's [start, stop) of `full` split in `size` equal parts; pad=True rounds the part size up (the last
    rank's range may run past `full`: those rows are zeros)."""
    if not pad and full % size:
        raise ValueError(f"cannot split {full} evenly over {size} ranks")
    part = -(-full // size)
    return rank * part, (rank + 1) * part


def _read(source, dim, ranges):
    """The indices `ranges` along `dim`, concatenated; past the tensor's end: zeros."""
    pieces = []
    for start, stop in ranges:
        end = min(stop, source.shape[dim])
        piece = source.read(dim, start, end)
        if end < stop:
            pad = [(0, 0)] * piece.ndim
            pad[dim] = (0, stop - end)
            piece = np.pad(piece, pad)
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, dim)


class _ParallelBase(nn.Cell):
    def __init__(self, mesh):
        super().__init__()
        self.tp_rank, self.tp_size = mesh.rank, mesh.size
        grouped = mesh.group is not None
        self.reduce = _group_sum(mesh, forward=True, backward=False)
        self.copy_in = _group_sum(mesh, forward=False, backward=True)
        self.gather = _GatherLastDim(mesh.group, mesh.rank, mesh.size) if grouped else _identity

    def full_shape(self, param):
        """The shape of the whole checkpoint tensor this parameter is a slice of (the loader checks it)."""
        raise NotImplementedError

    def slice_of(self, param):
        """(dim, [(start, stop), ...]): where `param` lies in the full checkpoint tensor; None: the whole tensor."""
        raise NotImplementedError

    def narrow(self, param, source):
        """This rank's share of the full tensor `source` (a source or an array) for `param`, as an array."""
        if not hasattr(source, "read"):
            source = ArraySource(np.asarray(source))
        spec = self.slice_of(param)
        return np.asarray(source) if spec is None else _read(source, *spec)

    def weight_loader(self, param, source):
        if not hasattr(source, "read"):
            source = ArraySource(np.asarray(source))
        array = self.narrow(param, source)
        if tuple(array.shape) != tuple(param.shape):
            raise ValueError(f"{type(self).__name__}: slice {array.shape} of a {tuple(source.shape)} tensor does not "
                             f"fit parameter {tuple(param.shape)}")
        param.set_data(to_parameter_data(array, source.is_bf16_bits, param.dtype))


class ColumnParallelLinear(_ParallelBase):
    """y = x W[rows]^T + b[rows]: this rank's output features; `row_ranges` index the full HF weight's rows
    (several ranges for a fused weight). gather_output=True (the LM head) all-gathers the full output.
    transposed=True: the weight is stored [in, out] (OpenAI's Conv1D, GPT-2), so the ranges index its columns."""

    def __init__(self, in_features, out_features, row_ranges, mesh, bias=False, dtype=ms.float32,
                 gather_output=False, std=0.02, transposed=False):
        super().__init__(mesh)
        self.in_features, self.full_out_features = in_features, out_features
        self.row_ranges = [tuple(r) for r in row_ranges]
        self.out_features = sum(b - a for a, b in self.row_ranges)
        self.gather_output = gather_output
        self.transposed = transposed
        shape = (in_features, self.out_features) if transposed else (self.out_features, in_features)
        self.weight = new_parameter(shape, dtype, "normal", std)
        self.bias = new_parameter((self.out_features,), dtype, "zeros") if bias else None
        self._matmul = ops.MatMul(transpose_b=not transposed)

    def partial(self, x):
        """[..., in] -> [..., local out] (no collective)."""
        shape = x.shape
        y = self._matmul(x.reshape(-1, shape[-1]), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(shape[:-1] + (self.out_features,))

    def construct(self, x):
        y = self.partial(self.copy_in(x))
        if not self.gather_output:
            return y
        shape = y.shape
        full = self.gather(y.reshape(-1, self.out_features))[:, :self.full_out_features]
        return full.reshape(shape[:-1] + (self.full_out_features,))

    def parallel_logits(self, hidden_states, row_scale=None):  # the LM head (see LlamaForCausalLM.lm_logits)
        """Full logits; `row_scale` [local out] multiplies this rank's columns before the gather (Baichuan2's
        NormHead: each vocab row's inverse norm, computed from the rows this rank holds)."""
        if not self.gather_output:
            raise NotImplementedError("an LM head planned 'colwise' leaves each rank a vocab slice of the logits; "
                                      "plan it 'colwise_gather_output'")
        if row_scale is None:
            return self(hidden_states)
        y = self.partial(self.copy_in(hidden_states)) * row_scale
        shape = y.shape
        full = self.gather(y.reshape(-1, self.out_features))[:, :self.full_out_features]
        return full.reshape(shape[:-1] + (self.full_out_features,))

    def full_shape(self, param):
        if param is self.weight and self.transposed:
            return (self.in_features, self.full_out_features)
        return (self.full_out_features,) + tuple(param.shape[1:])

    def slice_of(self, param):
        return (1 if param is self.weight and self.transposed else 0), self.row_ranges


class RowParallelLinear(_ParallelBase):
    """y = sum over ranks of x[cols] W[:, cols]^T, then + b: the bias is added once, after the reduce.
    transposed=True: the weight is stored [in, out] (OpenAI's Conv1D), so the range indexes its rows."""

    def __init__(self, in_features, out_features, col_range, mesh, bias=False, dtype=ms.float32, std=0.02,
                 transposed=False):
        super().__init__(mesh)
        self.full_in_features, self.out_features = in_features, out_features
        self.col_range = tuple(col_range)
        self.in_features = self.col_range[1] - self.col_range[0]
        self.transposed = transposed
        shape = (self.in_features, out_features) if transposed else (out_features, self.in_features)
        self.weight = new_parameter(shape, dtype, "normal", std)
        self.bias = new_parameter((out_features,), dtype, "zeros") if bias else None
        self._matmul = ops.MatMul(transpose_b=not transposed)

    def partial(self, x):
        """[..., local in] -> this rank's partial sum [..., out], no bias."""
        shape = x.shape
        y = self._matmul(x.reshape(-1, shape[-1]), self.weight)
        return y.reshape(shape[:-1] + (self.out_features,))

    def construct(self, x):
        y = self.reduce(self.partial(x))
        return y + self.bias if self.bias is not None else y

    def full_shape(self, param):
        if param is not self.weight:
            return (self.out_features,)
        return (self.full_in_features, self.out_features) if self.transposed else (self.out_features,
                                                                                   self.full_in_features)

    def slice_of(self, param):
        if self.bias is not None and param is self.bias:
            return None
        return (0 if self.transposed else 1), [self.col_range]


class GradSummedReplica(nn.Cell):
    """A replicated cell whose parameters' gradients are summed over the group (HF's
    `replicated_with_grad_allreduce`): Qwen3's and Gemma 3's per-head q/k norms see only this rank's heads, so each
    rank's gradient is a part of the whole. The cell computes with the parameters it is handed
    (`construct_with(params, *args)`); this one holds them under the cell's own names (HF's), loaded whole."""

    def __init__(self, cell, mesh):
        super().__init__()
        if not hasattr(cell, "construct_with"):
            raise NotImplementedError(f"replicated_with_grad_allreduce: {type(cell).__name__} does not compute with "
                                      "parameters handed to it (`construct_with(params, *args)`)")
        self._names = [name for name, param in cell._params.items() if param is not None]
        for name in self._names:
            setattr(self, name, cell._params[name])
        self._inner = (cell,)  # a tuple: not a child cell, so the parameters keep their names here
        self.sum_grad = _group_sum(mesh, forward=False, backward=True)

    def construct(self, *args):
        params = {name: self.sum_grad(getattr(self, name)) for name in self._names}
        return self._inner[0].construct_with(params, *args)

    def __getattr__(self, name):  # the cell's other attributes (a norm's eps) read through
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_inner")
            if inner is None:
                raise
            return getattr(inner[0], name)


class GradSummedTail(nn.Cell):
    """A replicated linear layer (the full weight on every rank, loaded whole) whose last `tail` output features
    feed only this rank's heads downstream: their gradient is summed over the group. DeepSeek's MLA
    `kv_a_proj_with_mqa` (HF's `mla_kv_a_proj` style): the latent goes through the column-parallel kv_b_proj,
    whose input gradient is already summed, but the shared rotary key goes straight to this rank's heads."""

    def __init__(self, linear, tail, mesh):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features, self.tail = linear.in_features, linear.out_features, tail
        self.sum_tail = _group_sum(mesh, forward=False, backward=True)
        self._matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        shape = x.shape
        y = self._matmul(x.reshape(-1, shape[-1]), self.weight)
        if self.bias is not None:
            y = y + self.bias
        head = self.out_features - self.tail
        y = ops.cat((y[:, :head], self.sum_tail(y[:, head:])), -1)
        return y.reshape(shape[:-1] + (self.out_features,))


class VocabParallelEmbedding(_ParallelBase):
    """Rows [start, stop) of the vocabulary (the last rank's range may be padded with zero rows); ids outside
    this rank's range give zeros, the all-reduce fills them from the rank that owns them."""

    def __init__(self, num_embeddings, embedding_dim, vocab_range, mesh, dtype=ms.float32, std=0.02):
        super().__init__(mesh)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.vocab_start, self.vocab_end = vocab_range
        self.local_rows = self.vocab_end - self.vocab_start
        self.weight = new_parameter((self.local_rows, embedding_dim), dtype, "normal", std)
        self._matmul = ops.MatMul(transpose_b=True)

    def partial(self, input_ids):
        inside = ops.logical_and(input_ids >= self.vocab_start, input_ids < self.vocab_end)
        local_ids = ops.where(inside, input_ids - self.vocab_start, ops.zeros_like(input_ids))
        rows = ops.gather(self.weight, local_ids, 0)
        return rows * inside.expand_dims(-1).astype(rows.dtype)

    def construct(self, input_ids):
        check_indices(input_ids, self.num_embeddings)  # each rank would give zeros for an id no rank owns
        return self.reduce(self.partial(input_ids))

    def partial_logits(self, hidden_states):
        """Tied LM head: this rank's vocab columns of the logits [..., local rows]."""
        shape = hidden_states.shape
        y = self._matmul(hidden_states.reshape(-1, shape[-1]), self.weight)
        return y.reshape(shape[:-1] + (self.local_rows,))

    def parallel_logits(self, hidden_states):
        y = self.partial_logits(self.copy_in(hidden_states))
        shape = y.shape
        full = self.gather(y.reshape(-1, self.local_rows))[:, :self.num_embeddings]
        return full.reshape(shape[:-1] + (self.num_embeddings,))

    def full_shape(self, param):
        return (self.num_embeddings, self.embedding_dim)

    def slice_of(self, param):
        return 0, [(self.vocab_start, self.vocab_end)]


class ParallelExperts(_ParallelBase):
    """Stacked SwiGLU experts (HF 5's `experts.gate_up_proj` [E, 2 * I, H], `experts.down_proj` [E, H, I]) split
    over the expert width I, Megatron's MLP split for every expert at once: this rank holds gate and up rows
    [start, stop) of each expert and the same down columns, so its output is a partial sum. Routing stays
    replicated (the router reads the full hidden state on every rank)."""

    def __init__(self, num_experts, hidden, inter, inter_range, mesh, dtype=ms.float32, std=0.02):
        super().__init__(mesh)
        self.num_experts, self.hidden, self.full_inter = num_experts, hidden, inter
        self.inter_range = tuple(inter_range)
        self.copy_weights = _group_sum(mesh, forward=False, backward=True)
        local = self.inter_range[1] - self.inter_range[0]
        self.gate_up_proj = new_parameter((num_experts, 2 * local, hidden), dtype, "normal", std)
        self.down_proj = new_parameter((num_experts, hidden, local), dtype, "normal", std)

    def partial(self, x, indices, weights):
        return fused.moe_experts(x, indices, weights, self.gate_up_proj, self.down_proj)

    def construct(self, x, indices, weights):
        # the routing weights, like x, reach this rank's partial output only: their gradient is summed too
        return self.reduce(self.partial(self.copy_in(x), indices, self.copy_weights(weights)))

    def full_shape(self, param):
        if param is self.gate_up_proj:
            return (self.num_experts, 2 * self.full_inter, self.hidden)
        return (self.num_experts, self.hidden, self.full_inter)

    def slice_of(self, param):
        start, stop = self.inter_range
        if param is self.gate_up_proj:  # gate rows, then up rows: this rank's block of each
            return 1, [(start, stop), (self.full_inter + start, self.full_inter + stop)]
        return 2, [(start, stop)]


class ShardedRMSNorm(_ParallelBase):
    """An RMSNorm over a column-parallel output (OLMo 2's q_norm / k_norm span the whole projection, H * D): the
    weight holds the same rows as that output (`row_ranges`), and the sum of squares is all-reduced so every rank
    normalises by the full width's mean (forward and backward: each rank's outputs depend on every rank's inputs).
    `replicas`: how many ranks hold each row (GQA's shared KV heads), divided out of the sum."""

    def __init__(self, full, row_ranges, eps, mesh, dtype=ms.float32, replicas=1):
        super().__init__(mesh)
        self.full, self.row_ranges, self.variance_epsilon = full, [tuple(r) for r in row_ranges], eps
        self.weight = new_parameter((sum(b - a for a, b in self.row_ranges),), dtype, "ones")
        self.sum = _group_sum(mesh, forward=True, backward=True)
        self.denominator = float(full * replicas)

    def construct(self, x):
        xf = x.astype(ms.float32)
        mean = self.sum((xf * xf).sum(-1, keepdims=True)) / self.denominator
        return (xf * ops.rsqrt(mean + self.variance_epsilon) * self.weight.astype(ms.float32)).astype(x.dtype)

    def full_shape(self, param):
        return (self.full,)

    def slice_of(self, param):
        return 0, self.row_ranges


class ShardedParameter:
    """Rows of one parameter its cell computes with itself (gpt-oss's per-head attention sinks): the cell's
    parameter is replaced by this rank's rows, and this object loads them (weight_loading.weight_loaders finds it in
    the cell's `tp_parameters`). The rows feed only this rank's heads, so the gradient is the slice as it is."""

    def __init__(self, full_shape, ranges):
        self._full_shape, self.ranges = tuple(full_shape), [tuple(r) for r in ranges]

    def full_shape(self, param):
        return self._full_shape

    def slice_of(self, param):
        return 0, self.ranges

    narrow = _ParallelBase.narrow
    weight_loader = _ParallelBase.weight_loader


class ParallelStackedExperts(_ParallelBase):
    """Stacked experts that compute themselves (gpt-oss: transposed, interleaved gate/up, biases, a clamped SwiGLU)
    split over the expert width: the cell declares, per parameter, `tp_param_dims[name] = (dim, width)` (the
    dimension holding the width, `width` entries per unit: gate/up interleaved are 2) or None (a bias added to the
    output, whole on every rank: counted by rank 0 only, its gradient summed over the group), and computes with
    the parameters handed to it (`construct_with(params, x, indices, weights)`). Each rank's output is a partial
    sum, all-reduced; the routing stays replicated, the routing weights' gradient is summed as in ParallelExperts."""

    def __init__(self, cell, unit_range, mesh):
        super().__init__(mesh)
        if not hasattr(cell, "construct_with") or not hasattr(cell, "tp_param_dims"):
            raise NotImplementedError(f"stacked experts: {type(cell).__name__} declares no `tp_param_dims` or does "
                                      "not compute with parameters handed to it (`construct_with`)")
        start, stop = unit_range
        self._inner = (cell,)  # a tuple: not a child cell (its full parameters are never loaded)
        self._full, self._slices = {}, {}
        for name, param in cell._params.items():
            if param is None:
                continue
            shape, spec = list(param.shape), cell.tp_param_dims[name]
            self._full[name] = tuple(shape)
            if spec is not None:
                dim, width = spec
                self._slices[name] = (dim, [(start * width, stop * width)])
                shape[dim] = (stop - start) * width
            setattr(self, name, new_parameter(tuple(shape), param.dtype))
        self._names = list(self._full)
        self.copy_weights = _group_sum(mesh, forward=False, backward=True)
        self.once = 1.0 if mesh.rank == 0 else 0.0

    def construct(self, x, indices, weights):
        params = {}
        for name in self._names:
            param = getattr(self, name)
            params[name] = param if name in self._slices else self.copy_weights(param) * self.once
        out = self._inner[0].construct_with(params, self.copy_in(x), indices, self.copy_weights(weights))
        return self.reduce(out)

    def full_shape(self, param):
        return self._full[self._name_of(param)]

    def slice_of(self, param):
        return self._slices.get(self._name_of(param))

    def _name_of(self, param):
        return next(name for name in self._names if getattr(self, name) is param)
