"""Which rank this process is and which group its tensor-parallel collectives run over.

Only tp == world size is supported (one tensor-parallel group, the world group): creating sub-groups for a
dp x tp mesh is not available with CPU's mccl backend, so it is not offered until it can be tested.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class TPMesh:
    rank: int
    size: int
    group: str = None  # None: no collectives (size 1, or a single-process test of one rank's shard)


def _world_group():
    from mindspore.communication import GlobalComm

    return GlobalComm.WORLD_COMM_GROUP  # "mccl_world_group" on CPU, "hccl_world_group" on Ascend


def init_tensor_parallel(tp_size=None) -> TPMesh:
    """Initialise communication once (msrun sets the environment) and return this process's mesh.

    `tp_size` None or equal to the world size; anything else is refused with the reason.
    """
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
    if tp_size is None:
        tp_size = world
    if int(tp_size) != world:
        raise NotImplementedError(f"tp_size={tp_size} with world size {world}: only tp_size == world size is "
                                  "supported (no data-parallel x tensor-parallel mesh yet)")
    return TPMesh(rank=rank, size=world, group=_world_group() if world > 1 else None)
