"""Data-parallel plumbing for the Trainer: who we are in an `msrun` job, and the few collectives DP needs.

`msrun` (and `mindformers-hf launch`, which runs it) starts one process per rank with MS_ROLE=MS_WORKER,
MS_WORKER_NUM, RANK_ID and DEVICE_ID in the environment; a plain `python script.py` has none of them and is
a world of one, with no communication at all. The collectives are MindSpore's own (`mccl` on the CPU backend,
HCCL on Ascend); ReduceScatter has no CPU kernel, so gradients are averaged with one AllReduce over a flat
buffer. In a data x tensor mesh (parallel/mesh.py) the data-parallel collectives run over the data-parallel
group only: the ranks of one tensor-parallel group hold different slices of one model and see the same batch.
"""
import os

import numpy as np
import mindspore as ms
from mindspore import ops


def _launched():
    return os.environ.get("MS_ROLE") == "MS_WORKER" and int(os.environ.get("MS_WORKER_NUM", "1")) > 1


def is_scheduler():
    """msrun also runs the script in its scheduler process (MS_ROLE=MS_SCHED): init() there serves the job
    and never returns, so that process must reach init() before doing any work."""
    return os.environ.get("MS_ROLE") == "MS_SCHED"


def world_size():
    return int(os.environ["MS_WORKER_NUM"]) if _launched() else 1


def rank():
    return int(os.environ.get("RANK_ID", "0")) if _launched() else 0


def local_rank():
    """This process's index on its machine (msrun numbers DEVICE_ID per node)."""
    return int(os.environ.get("DEVICE_ID", "0")) if _launched() else 0


def _mesh():
    from ..parallel.mesh import current_mesh

    mesh = current_mesh()
    return mesh if mesh is not None and mesh.tp_size > 1 else None


def data_parallel_size():
    """The number of model replicas that each see their own batch: the world, or world / tp_size in a data x
    tensor mesh (transformers' `dp_world_size`)."""
    mesh = _mesh() if world_size() > 1 else None
    return mesh.dp_size if mesh is not None else world_size()


def data_parallel_rank():
    mesh = _mesh() if world_size() > 1 else None
    return mesh.dp_rank if mesh is not None else rank()


def _dp_kwargs():
    """The group of the data-parallel collectives: the mesh's data-parallel group, else the world."""
    mesh = _mesh() if world_size() > 1 else None
    return {"group": mesh.dp_group} if mesh is not None else {}


def ensure_initialized():
    """Join the job's communication group once (a no-op in a world of one)."""
    if world_size() == 1 and not is_scheduler():
        return
    from mindspore.communication import _comm_helper, init

    if not _comm_helper.GlobalComm.INITED:
        init()


def all_reduce_sum(values):
    """Sum a list of tensors over the data-parallel ranks with one collective; returns new tensors of the same
    shapes."""
    if data_parallel_size() == 1 or not values:
        return list(values)
    shapes = [v.shape for v in values]
    flat = ops.cat([v.astype(ms.float32).reshape(-1) for v in values])
    flat = ops.AllReduce(**_dp_kwargs())(flat)
    out, start = [], 0
    for value, shape in zip(values, shapes):
        size = int(np.prod(shape, dtype=np.int64))
        out.append(flat[start:start + size].reshape(shape).astype(value.dtype))
        start += size
    return out


def all_reduce_mean(values):
    """Average over the data-parallel ranks: what DDP does to gradients."""
    n = data_parallel_size()
    return [v / n for v in all_reduce_sum(values)] if n > 1 else list(values)


def sum_scalar(value):
    """A Python number summed over the data-parallel ranks (token counts, losses for logging): the ranks of one
    tensor-parallel group see the same batch and count it once."""
    if data_parallel_size() == 1:
        return value
    # the CPU AllReduce takes float32 only: exact for counts below 2**24 tokens per step
    total = float(ops.AllReduce(**_dp_kwargs())(ms.Tensor(np.array([value], np.float32))).asnumpy()[0])
    return int(round(total)) if isinstance(value, (int, np.integer)) else total


def barrier():
    """Wait for every rank (an AllReduce of one number: there is no CPU barrier kernel to rely on). Joins the
    job first: a script may wait (main_process_first) before its Trainer exists."""
    if world_size() > 1:
        ensure_initialized()
        ops.AllReduce()(ms.Tensor(np.zeros(1, np.float32))).asnumpy()


def broadcast_parameters(params):
    """Rank 0's values into every rank's parameters, as DDP does when it wraps a model; in a data x tensor mesh
    each data-parallel group's first rank (the ranks holding the same slices) is the source."""
    if data_parallel_size() == 1:
        return
    mesh = _mesh()
    if mesh is not None:  # a masked sum over the data-parallel group: Broadcast has no sub-group form on CPU
        reduce, keep = ops.AllReduce(group=mesh.dp_group), mesh.dp_rank == 0
        for param in params:
            value = param.astype(ms.float32)
            value = reduce(value if keep else ops.zeros_like(value))
            param.set_data(value.astype(param.dtype))
        return
    broadcast = ops.Broadcast(0)
    for param in params:
        if param.dtype == ms.bfloat16:  # no bf16 collective on CPU: move the values through float32
            value = broadcast((param.astype(ms.float32),))[0].astype(ms.bfloat16)
        else:
            value = broadcast((param.value(),))[0]
        param.set_data(value)
