"""Which rank this process is, which group its tensor-parallel collectives run over, and (in a data x tensor
mesh) which group its data-parallel gradient average runs over.

The mesh is HF's / torchtitan's layout with tensor parallelism innermost: world = dp x tp, rank r sits at
tensor-parallel rank r % tp of data-parallel replica r // tp. With tp=2 on 4 processes:

    tensor-parallel groups  {0, 1} {2, 3}    each holds one whole model, split in two
    data-parallel groups    {0, 2} {1, 3}    the ranks holding the same slices; gradients average here

tp == world uses the world group (no sub-group). Sub-groups are made with `mindspore.communication.
create_group`; on the CPU backend (mccl) AllReduce runs over them but AllGather only over the world group, so
gathers over a sub-group are written as an AllReduce of zero-padded buffers (`gather_by_sum`).
"""
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TPMesh:
    rank: int
    size: int
    group: str = None  # None: no collectives (size 1, or a single-process test of one rank's shard)


@dataclass(frozen=True)
class DeviceMesh:
    """The whole layout of this process: world = dp_size x tp_size (tensor parallel innermost)."""
    world_size: int
    rank: int
    tp_size: int
    dp_size: int
    tp_group: str = None  # None: tp_size 1
    dp_group: str = None  # None: dp_size 1; the world group's name when tp_size is 1

    @property
    def tp_rank(self):
        return self.rank % self.tp_size

    @property
    def dp_rank(self):
        return self.rank // self.tp_size


_current = None  # the DeviceMesh of the last init_tensor_parallel (the Trainer reads it)
_groups = set()  # sub-groups already created in this process


def current_mesh():
    """The DeviceMesh set up by tensor-parallel loading in this process, or None (no tensor parallelism)."""
    return _current


def _world_group():
    from mindspore.communication import GlobalComm

    return GlobalComm.WORLD_COMM_GROUP  # "mccl_world_group" on CPU, "hccl_world_group" on Ascend


def _group(name, ranks):
    from mindspore.communication import create_group

    if name not in _groups:
        create_group(name, list(ranks))
        _groups.add(name)
    return name


def launcher_tp_size():
    """The tensor-parallel size accelerate's launcher exports (`accelerate launch --parallelism_config_tp_size
    N` sets ACCELERATE_USE_PARALLELISM_CONFIG=true and PARALLELISM_CONFIG_TP_SIZE=N), or None."""
    if os.environ.get("ACCELERATE_USE_PARALLELISM_CONFIG", "").lower() not in ("1", "true", "yes"):
        return None
    size = _env_size("PARALLELISM_CONFIG_TP_SIZE")
    return size if size > 1 else None


def _env_size(name):
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else 1  # (accelerate writes "None" for a size not given)


def _check_launcher_sizes(world, tp_size):
    """accelerate's dp_replicate_size / dp_shard_size, when the launcher exported them, must fill the world."""
    if launcher_tp_size() is None:
        return
    dp = 1
    for name in ("PARALLELISM_CONFIG_DP_REPLICATE_SIZE", "PARALLELISM_CONFIG_DP_SHARD_SIZE"):
        dp *= _env_size(name)
    if dp > 1 and dp * tp_size != world:
        raise ValueError(f"parallelism config: dp_replicate_size x dp_shard_size ({dp}) x tp_size ({tp_size}) must "
                         f"equal the number of processes ({world})")


def init_tensor_parallel(tp_size=None) -> TPMesh:
    """Initialise communication once (msrun sets the environment) and return this process's tensor-parallel mesh.

    `tp_size` None means the whole world; otherwise it must divide the world size, and the rest of the world is
    data parallel (`current_mesh()` holds both groups)."""
    global _current
    import mindspore.communication as comm
    from mindspore.communication._comm_helper import GlobalComm

    if not GlobalComm.INITED:
        # get_rank()/get_group_size() answer from msrun's environment before init(), so INITED is the test
        try:
            comm.init()
        except RuntimeError as e:
            raise RuntimeError("tensor parallelism needs the processes started by msrun (or mpirun): "
                               f"mindspore.communication.init() failed ({e}). See docs/parallelism.md") from None
    rank, world = comm.get_rank(), comm.get_group_size()
    tp = world if tp_size is None else int(tp_size)
    if tp < 1 or world % tp:
        raise ValueError(f"tp_size={tp_size} does not divide the world size {world}: the processes form a "
                         "data-parallel x tensor-parallel mesh (world = dp x tp)")
    _check_launcher_sizes(world, tp)
    dp = world // tp
    if tp == world:
        tp_group, dp_group = (_world_group() if world > 1 else None), None
    else:
        first = rank - rank % tp
        tp_group = _group(f"mfhf_tp_{first}_{tp}", range(first, first + tp)) if tp > 1 else None
        dp_group = _world_group() if tp == 1 else _group(f"mfhf_dp_{rank % tp}_{tp}", range(rank % tp, world, tp))
    _current = DeviceMesh(world, rank, tp, dp, tp_group, dp_group)
    return TPMesh(rank=rank % tp, size=tp, group=tp_group)


def gather_by_sum(group):
    """An AllReduce(SUM) over `group`, for gathers written as a sum of zero-padded buffers (each rank fills only
    its own part): the one gather every group supports on the CPU backend."""
    from mindspore import ops

    return ops.AllReduce(ops.ReduceOp.SUM, group) if group is not None else (lambda x: x)


def is_world_group(group):
    return group is None or group == _world_group()
