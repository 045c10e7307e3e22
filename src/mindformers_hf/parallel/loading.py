"""Loading a tensor-parallel model: each parallel layer's `weight_loader` reads only its slice of the file.

A source is anything with `.shape`, `.is_bf16_bits` and `.read(dim, start, stop)`; `CheckpointSource` reads
through `SafetensorsFile.get_slice` (exact bytes, counted), `ArraySource` wraps an array already in memory.
"""
import numpy as np

from ..safetensors_io import _ST_TO_NUMPY, CheckpointError, SafetensorsFile


def to_parameter_data(array, is_bf16_bits, target):
    from ..modeling_utils import _to_parameter_data

    return _to_parameter_data(array, is_bf16_bits, target)


class ArraySource:
    def __init__(self, array, is_bf16_bits=False):
        self.array, self.is_bf16_bits = array, is_bf16_bits
        self.shape = tuple(array.shape)

    def read(self, dim, start, stop):
        index = [slice(None)] * self.array.ndim
        index[dim] = slice(start, stop)
        return self.array[tuple(index)]


class CheckpointSource:
    def __init__(self, reader, key):
        self.reader, self.key = reader, key
        self.shape = tuple(reader.shape(key))
        self.is_bf16_bits = reader.dtype(key) == "BF16"

    def read(self, dim, start, stop):
        return self.reader.get_slice(self.key, dim, start, stop)


def _itemsize(reader, key):
    return np.dtype(_ST_TO_NUMPY[reader.dtype(key)]).itemsize


def _sharded_layers(model):
    """{parameter name: layer} for every parameter owned by a layer with a weight_loader."""
    owners = {}
    for cell_name, cell in model.cells_and_names():
        if hasattr(cell, "weight_loader"):
            for attr in ("weight", "bias"):
                if getattr(cell, attr, None) is not None:
                    owners[f"{cell_name}.{attr}" if cell_name else attr] = cell
    return owners


def load_tensor_parallel_checkpoint(model, files):
    """Fill every parameter from safetensors `files`: sharded ones through their layer's weight_loader,
    replicated ones whole. Returns {"bytes_read", "sharded_bytes_read", "sharded_bytes_in_file"}."""
    params = dict(model.parameters_and_names())
    owners = _sharded_layers(model)
    loaded, stats = set(), {"bytes_read": 0, "sharded_bytes_read": 0, "sharded_bytes_in_file": 0}
    for path in files:
        reader = SafetensorsFile(path)
        for key in reader.keys():
            name = model.checkpoint_key_to_name(key)
            if name is None:
                continue
            if name not in params:
                if model._skip_key(name):
                    continue
                raise CheckpointError(f"Unexpected key {key!r} in {path}: {type(model).__name__} has no parameter "
                                      "of that name")
            param, source = params[name], CheckpointSource(reader, key)
            if name in owners:
                before = reader.bytes_read
                owners[name].weight_loader(param, source)
                stats["sharded_bytes_read"] += reader.bytes_read - before
                stats["sharded_bytes_in_file"] += int(np.prod(source.shape)) * _itemsize(reader, key)
            else:
                array = reader.get(key)
                if tuple(array.shape) != tuple(param.shape):
                    raise CheckpointError(f"Shape mismatch for {key!r} in {path}: checkpoint has {array.shape}, "
                                          f"{type(model).__name__} expects {tuple(param.shape)}")
                param.set_data(to_parameter_data(array, source.is_bf16_bits, param.dtype))
            loaded.add(name)
        stats["bytes_read"] += reader.bytes_read
        reader.close()
    missing = sorted(set(params) - loaded)
    if missing:
        raise CheckpointError(f"Missing keys: the checkpoint has no tensor for {len(missing)} parameter(s) of "
                              f"{type(model).__name__}: {', '.join(missing[:8])}")
    return stats


def load_tensor_parallel(model, files, tp_plan="auto", tp_size=None):
    """from_pretrained(tp_plan=..., tp_size=...): shard `model` for this rank, then read its slices of the
    safetensors `files` (from_pretrained resolves them as for a single-device load: hub.CheckpointLocation).

    The byte counts land in `model.tp_load_stats` (the tests assert each rank read only its share)."""
    from .mesh import init_tensor_parallel
    from .plan import apply_tensor_parallel, resolve_tp_plan

    mesh = init_tensor_parallel(tp_size)
    apply_tensor_parallel(model, mesh, resolve_tp_plan(model, tp_plan))
    model.tp_load_stats = load_tensor_parallel_checkpoint(model, files)
    return model
