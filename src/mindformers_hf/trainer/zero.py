"""ZeRO stage 1: AdamW whose moments are split over the data-parallel ranks (DeepSpeed's optimizer-state
partitioning, `"zero_optimization": {"stage": 1}`).

Each parameter group is laid out as one flat float32 vector (the parameters in order), padded to a multiple of
the data-parallel size N; rank k owns the k-th of N equal parts. A step takes the averaged gradients (the
Trainer's AllReduce), updates only the owned part with MindSpore's fused AdamW kernel (elementwise, so the
values equal the unsharded optimizer's), then every rank's updated part is put back into all ranks' parameters
with one AllReduce of a zero-padded vector per group (ReduceScatter and sub-group AllGather have no CPU kernels;
on Ascend the same sum runs on HCCL). Moments per rank: 2 x 4 bytes x ceil(P / N) instead of 2 x 4 x P.

Checkpoints hold the whole (gathered) moments under the unsharded optimizer's names ("exp_avg.<param>"), so a
checkpoint saved with N ranks resumes with any other N, or without sharding.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, ops

from .optimization import AdamW

KINDS = ("exp_avg", "exp_avg_sq")


class ZeroAdamW(AdamW):
    """torch.optim.AdamW's update with its state partitioned over a data-parallel group of `size` ranks."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, names=None, rank=0,
                 size=1, group=None):
        self.rank, self.size = int(rank), int(size)
        self._reduce = ops.AllReduce(ops.ReduceOp.SUM, group) if group else ops.AllReduce()
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, names=names)
        self.shards = []
        for gi, group_ in enumerate(self.param_groups):
            sizes = [int(np.prod(p.shape, dtype=np.int64)) for p in group_["params"]]
            part = max(1, math.ceil(sum(sizes) / self.size))
            shard = {"sizes": sizes, "part": part, "start": self.rank * part,
                     "param": Parameter(ops.zeros(part, ms.float32), name=f"zero_shard.group{gi}", requires_grad=False)}
            for kind in KINDS:
                shard[kind] = Parameter(ops.zeros(part, ms.float32), name=f"{kind}.zero_shard.group{gi}",
                                        requires_grad=False)
            self.shards.append(shard)

    def _state_shapes(self, param):
        return {}  # no per-parameter state: the owned parts live in self.shards

    def _flat(self, tensors, shard):
        flat = ops.cat([t.astype(ms.float32).reshape(-1) for t in tensors])
        pad = shard["part"] * self.size - flat.shape[0]
        return ops.cat([flat, ops.zeros(pad, ms.float32)]) if pad else flat

    def _own(self, flat, shard):
        return flat[shard["start"]:shard["start"] + shard["part"]]

    def _gather(self, own, shard):
        """The whole flat vector from every rank's owned part."""
        before, after = shard["start"], (self.size - self.rank - 1) * shard["part"]
        pieces = ([ops.zeros(before, ms.float32)] if before else []) + [own] + (
            [ops.zeros(after, ms.float32)] if after else [])
        return self._reduce(ops.cat(pieces)) if self.size > 1 else own

    def step(self, grads):
        if len(grads) != len(self.params):
            raise ValueError(f"{type(self).__name__}.step got {len(grads)} gradients for {len(self.params)} "
                             "parameters")
        if any(g is None for g in grads):
            raise NotImplementedError("ZeRO stage 1: every optimized parameter needs a gradient (freeze parameters "
                                      "with requires_grad=False instead)")
        self.step_count += 1
        index = 0
        for group, shard in zip(self.param_groups, self.shards):
            params = group["params"]
            group_grads = grads[index:index + len(params)]
            index += len(params)
            if not params:
                continue
            shard["param"].set_data(self._own(self._flat(params, shard), shard).copy())  # own memory: updated in place
            own_grad = self._own(self._flat(group_grads, shard), shard)
            beta1, beta2 = group["betas"]
            t = self.step_count
            bc1, bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
            lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
            self._kernel(shard["param"], shard["exp_avg"], shard["exp_avg_sq"], lr * math.sqrt(bc2) / bc1, beta1,
                         beta2, eps * math.sqrt(bc2), wd * bc1 / math.sqrt(bc2), own_grad)
            full, start = self._gather(shard["param"].value(), shard), 0
            for param, size in zip(params, shard["sizes"]):
                param.set_data(full[start:start + size].reshape(param.shape).astype(param.dtype).copy())
                start += size

    # ------------------------------------------------------------------ state
    def state_tensors(self):
        """This rank's state tensors (its owned parts): what it holds in memory."""
        return {f"{kind}.zero_shard.group{gi}": shard[kind] for gi, shard in enumerate(self.shards) for kind in KINDS}

    def full_state_arrays(self):
        """{"<kind>.<name>": whole moment} as the unsharded AdamW saves them (a collective over the group)."""
        arrays = {}
        names = iter(self.names)
        for group, shard in zip(self.param_groups, self.shards):
            group_names = [next(names) for _ in group["params"]]
            for kind in KINDS:
                full = self._gather(shard[kind].value(), shard).asnumpy()
                start = 0
                for name, param, size in zip(group_names, group["params"], shard["sizes"]):
                    arrays[f"{kind}.{name}"] = full[start:start + size].reshape(param.shape)
                    start += size
        return arrays

    def load_state(self, meta, arrays):
        """Whole moments (any N's checkpoint, or the unsharded optimizer's) -> this rank's parts."""
        if meta["group_sizes"] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"Optimizer state has parameter groups of sizes {meta['group_sizes']}, this optimizer "
                             f"has {[len(g['params']) for g in self.param_groups]}")
        expected = {f"{kind}.{name}" for name in self.names for kind in KINDS}
        if set(arrays) != expected:
            extra, missing = sorted(set(arrays) - expected), sorted(expected - set(arrays))
            raise ValueError(f"Optimizer state does not match the parameters being trained (unexpected: {extra[:2]}, "
                             f"missing: {missing[:2]})")
        names = iter(self.names)
        for group, shard in zip(self.param_groups, self.shards):
            group_names = [next(names) for _ in group["params"]]
            for kind in KINDS:
                pieces = []
                for name, param in zip(group_names, group["params"]):
                    array = np.asarray(arrays[f"{kind}.{name}"], np.float32)
                    if tuple(array.shape) != tuple(param.shape):
                        raise ValueError(f"Optimizer state {kind}.{name} has shape {array.shape}, expected "
                                         f"{tuple(param.shape)}")
                    pieces.append(array.reshape(-1))
                flat = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
                flat = np.pad(flat, (0, shard["part"] * self.size - flat.size))
                shard[kind].set_data(ms.Tensor(flat[shard["start"]:shard["start"] + shard["part"]].copy()))
        self.step_count = int(meta["step"])
        for group, saved in zip(self.param_groups, meta["param_groups"]):
            for key, value in saved.items():
                group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
