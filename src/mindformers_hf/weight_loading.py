"""The one weight-loading pipeline (vLLM's `load_weights` shape): every load goes through it.

    file stream                 (key, file, tensor, is_bf16_bits): safetensors (lazy), GGUF (dequantized), a dict
 -> the class's key transforms  renaming table (weights.py), expert stacking (models/mixtral), fused blocks
 -> each parameter's loader     `weight_loader(param, source)` of the cell owning it (parallel layers: this
                                rank's slice), else `default_weight_loader` (a full copy)

Single-process, tensor-parallel, GGUF and remote-format loads differ only in the stream and in which cells
carry a `weight_loader`. A tensor travels as a *source*: `.shape`, `.is_bf16_bits`, `.read(dim, start, stop)`
and `np.asarray(source)`; a safetensors source reads only the slice a loader asks for, so each tensor-parallel
rank pages in only its share. Unexpected, missing and mis-shaped tensors are errors naming key, file and shapes.
"""
import math

import numpy as np

from .safetensors_io import _ST_BITS, CheckpointError, SafetensorsFile
from .tensor_io import to_parameter_data


class ArraySource:
    """A tensor already in memory (GGUF's dequantized arrays, a stacked or permuted tensor, a test's array).
    Its bytes count as read: they were, to build it."""

    def __init__(self, array, is_bf16_bits=False):
        self.array, self.is_bf16_bits = np.asarray(array), is_bf16_bits
        self.shape, self.dtype = tuple(self.array.shape), self.array.dtype
        self.nbytes = self.bytes_read = self.array.nbytes

    def read(self, dim, start, stop):
        index = [slice(None)] * self.array.ndim
        index[dim] = slice(start, stop)
        return self.array[tuple(index)]

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


class CheckpointSource:
    """One tensor of an open safetensors file, read only when asked: whole (`np.asarray`) or a slice along a
    dim (`read`, through SafetensorsFile.get_slice: exact bytes). `bytes_read` counts what this tensor cost."""

    def __init__(self, reader, key):
        self.reader, self.key = reader, key
        self.shape = tuple(reader.shape(key))
        self.is_bf16_bits = reader.dtype(key) == "BF16"
        self.bytes_read = 0

    @property
    def dtype(self):  # numpy storage dtype; float8 & co. raise the reader's CheckpointError naming file and key
        return self.reader._numpy_dtype(self.key)

    @property
    def nbytes(self):
        return math.prod(self.shape) * _ST_BITS[self.reader.dtype(self.key)] // 8

    def _counted(self, fn, *args):
        before = self.reader.bytes_read
        out = fn(*args)
        self.bytes_read += self.reader.bytes_read - before
        return out

    def read(self, dim, start, stop):
        return self._counted(self.reader.get_slice, self.key, dim, start, stop)

    def __array__(self, dtype=None, copy=None):
        array = self._counted(self.reader.get, self.key)
        return array if dtype is None else array.astype(dtype)


class StackedSource:
    """Per-expert tensors as one stacked tensor, read lazily: parts[e][b] [R, ...] -> [E, B * R, ...] (expert e's
    blocks one after another along dim 1: gate rows, then up rows). A slice along dim 1 or 2 reads only that
    slice of each part, so a tensor-parallel rank reads its share of every expert."""

    def __init__(self, parts, is_bf16_bits=False):
        self.parts, self.is_bf16_bits = parts, is_bf16_bits
        first = parts[0][0]
        self.rows, self.dtype = first.shape[0], first.dtype
        self.shape = (len(parts), len(parts[0]) * self.rows) + tuple(first.shape[1:])

    @property
    def bytes_read(self):
        return sum(part.bytes_read for blocks in self.parts for part in blocks)

    @property
    def nbytes(self):
        return sum(part.nbytes for blocks in self.parts for part in blocks)

    def _rows(self, blocks, start, stop):
        pieces = []
        for b, part in enumerate(blocks):
            lo, hi = max(start, b * self.rows), min(stop, (b + 1) * self.rows)
            if lo < hi:
                pieces.append(part.read(0, lo - b * self.rows, hi - b * self.rows))
        return np.concatenate(pieces, 0)

    def read(self, dim, start, stop):
        if dim == 0:
            return np.stack([self._rows(self.parts[e], 0, self.shape[1]) for e in range(start, stop)])
        if dim == 1:
            return np.stack([self._rows(blocks, start, stop) for blocks in self.parts])
        return np.stack([np.concatenate([p.read(dim - 1, start, stop) for p in blocks], 0) for blocks in self.parts])

    def __array__(self, dtype=None, copy=None):
        array = np.stack([np.concatenate([np.asarray(p) for p in blocks], 0) for blocks in self.parts])
        return array if dtype is None else array.astype(dtype)


class RowPermuted:
    """source rows in the order `perm` (out row i = source row perm[i]), read lazily: a slice of rows reads only
    those rows of the source, one read per contiguous run (InternLM2's grouped wqkv -> our q, k, v blocks)."""

    def __init__(self, source, perm):
        self.source, self.perm = source, np.asarray(perm)
        self.shape, self.is_bf16_bits = tuple(source.shape), source.is_bf16_bits

    dtype = property(lambda self: self.source.dtype)
    nbytes = property(lambda self: self.source.nbytes)
    bytes_read = property(lambda self: self.source.bytes_read)

    def read(self, dim, start, stop):
        if dim != 0:
            index = [slice(None)] * len(self.shape)
            index[dim] = slice(start, stop)
            return np.asarray(self)[tuple(index)]
        rows, pieces, i = self.perm[start:stop], [], 0
        while i < len(rows):  # runs of consecutive source rows
            j = i + 1
            while j < len(rows) and rows[j] == rows[j - 1] + 1:
                j += 1
            pieces.append(self.source.read(0, int(rows[i]), int(rows[j - 1]) + 1))
            i = j
        return np.concatenate(pieces, 0) if pieces else np.asarray(self)[:0]

    def __array__(self, dtype=None, copy=None):
        array = np.asarray(self.source)[self.perm]
        return array if dtype is None else array.astype(dtype)


def row_permuted(source, reorder, config):
    """`reorder(array, config)` (a WeightRule's load function, which reorders rows) applied lazily: the row order
    comes from running it on row numbers; an order that is not a permutation is applied to the whole tensor."""
    rows = source.shape[0]
    perm = np.asarray(reorder(np.arange(rows).reshape((rows,) + (1,) * (len(source.shape) - 1)), config))
    perm = perm.reshape(-1) if perm.size == rows else None
    if perm is None or not np.array_equal(np.sort(perm), np.arange(rows)):
        return ArraySource(reorder(np.asarray(source), config), source.is_bf16_bits)
    return RowPermuted(source, perm)


def as_source(value, is_bf16_bits=False):
    return value if hasattr(value, "read") else ArraySource(value, is_bf16_bits)


def iter_safetensors(files):
    """(key, file, CheckpointSource, is_bf16_bits) for every tensor of `files`, nothing read yet."""
    for path in files:
        reader = SafetensorsFile(path)
        for key in reader.keys():
            yield key, path, CheckpointSource(reader, key), reader.dtype(key) == "BF16"
        reader.close()


def default_weight_loader(param, source):
    """A replicated parameter: the whole tensor, of exactly the parameter's shape."""
    if tuple(source.shape) != tuple(param.shape):
        raise ValueError(f"expected {tuple(param.shape)}")
    param.set_data(to_parameter_data(np.asarray(source), source.is_bf16_bits, param.dtype))


def weight_loaders(model):
    """{parameter name: (owning cell, its weight_loader)} for every parameter of a cell that has one (and every
    parameter a cell lists in `tp_parameters`: {attribute: its loader})."""
    owners = {}
    for cell_name, cell in model.cells_and_names():
        # single parameters a tensor-parallel plan split in place (parallel/layers.py ShardedParameter)
        for attr, owner in (getattr(cell, "tp_parameters", None) or {}).items():
            owners[f"{cell_name}.{attr}" if cell_name else attr] = (owner, owner.weight_loader)
        loader = getattr(cell, "weight_loader", None)
        if loader is None:
            continue
        for attr, param in cell._params.items():
            if param is not None:
                owners[f"{cell_name}.{attr}" if cell_name else attr] = (cell, loader)
    return owners


def fill_parameters(model, stream):
    """Run `stream` (already through the class's key transforms) into `model`'s parameters.

    Returns (loaded names, {"bytes_read", "sharded_bytes_read", "sharded_bytes_in_file"}); missing parameters
    are left to the caller (PreTrainedModel.load_weights decides which it may initialise)."""
    params = dict(model.parameters_and_names())
    owners = weight_loaders(model)
    loaded = set()
    stats = {"bytes_read": 0, "sharded_bytes_read": 0, "sharded_bytes_in_file": 0}
    from tqdm.auto import tqdm

    progress = tqdm(total=len(params), desc="Loading weights", unit="tensor", leave=False, disable=len(params) < 64)
    for key, path, value, is_bits in stream:
        name = model.checkpoint_key_to_name(key)
        if name is None:
            continue
        source = as_source(value, is_bits)
        if name not in params:
            if model._skip_key(name) or (model._new_head_prefixes and model._is_head_key(name)):
                continue  # (a task-head model skips another head's tensors, as transformers does)
            raise CheckpointError(f"Unexpected key {key!r} in {path}: {type(model).__name__} has no parameter of "
                                  f"that name (shape in file {tuple(source.shape)})")
        param = params[name]
        owner, loader = owners.get(name, (None, default_weight_loader))
        expected = owner.full_shape(param) if owner is not None else tuple(param.shape)
        if tuple(source.shape) != tuple(expected):
            raise CheckpointError(f"Shape mismatch for {key!r} in {path}: checkpoint has {tuple(source.shape)}, "
                                  f"{type(model).__name__} expects {tuple(expected)}")
        loader(param, source)
        stats["bytes_read"] += source.bytes_read
        if owner is not None:
            stats["sharded_bytes_read"] += source.bytes_read
            stats["sharded_bytes_in_file"] += source.nbytes
        loaded.add(name)
        progress.update(1)
    progress.close()
    return loaded, stats
