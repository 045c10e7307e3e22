"""Tensor parallelism: a mesh over mindspore.communication, Megatron-style parallel layers with HF parameter
names, a registry of parallel styles, and a plan applier that swaps them into a built model from the layouts
its modules declare (`_tp_plan`); loading is the shared pipeline of weight_loading.py. Imports no model family."""
from .loading import load_tensor_parallel
from .mesh import TPMesh, init_tensor_parallel
from .plan import apply_tensor_parallel, resolve_tp_plan

__all__ = ["TPMesh", "init_tensor_parallel", "apply_tensor_parallel", "resolve_tp_plan", "load_tensor_parallel"]
