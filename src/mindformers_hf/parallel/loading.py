"""Loading a tensor-parallel model: the shared pipeline (weight_loading.py) after the plan has swapped in the
parallel layers, whose `weight_loader`s read only this rank's slice of each file tensor."""
from ..weight_loading import ArraySource, CheckpointSource, iter_safetensors, weight_loaders
from . import mesh as _mesh
from .plan import apply_tensor_parallel, resolve_tp_plan

__all__ = ["ArraySource", "CheckpointSource", "load_tensor_parallel", "load_tensor_parallel_checkpoint"]


def _sharded_layers(model):
    """{parameter name: layer} for every parameter owned by a layer with a weight_loader."""
    return {name: cell for name, (cell, _) in weight_loaders(model).items()}


def load_tensor_parallel_checkpoint(model, files):
    """Fill an already sharded `model` from safetensors `files` through its own load_weights (renaming tables and
    expert stacking included). Returns {"bytes_read", "sharded_bytes_read", "sharded_bytes_in_file"}."""
    model.load_weights(iter_safetensors(files))
    return model.load_stats


def load_tensor_parallel(model, files, tp_plan="auto", tp_size=None):
    """from_pretrained(tp_plan=..., tp_size=...): shard `model` for this rank, then load the safetensors `files`
    through the shared pipeline.

    The byte counts land in `model.tp_load_stats` (the tests assert each rank read only its share)."""
    mesh = _mesh.init_tensor_parallel(tp_size)  # (looked up at call time: tests stand in for msrun)
    apply_tensor_parallel(model, mesh, resolve_tp_plan(model, tp_plan))
    model.tp_load_stats = load_tensor_parallel_checkpoint(model, files)
    return model
