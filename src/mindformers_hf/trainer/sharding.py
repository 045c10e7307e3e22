"""The Trainer over a tensor-parallel model: whole tensors out of the ranks' slices (for model files and
optimizer checkpoints, which stay in the unsharded layout so any other mesh can resume them), the slices back
out of whole tensors (resume), and the global gradient norm over slices.

Which element of the whole tensor a rank holds is read off the layer's own `weight_loader` (parallel/layers.py):
it is run once on a tensor whose values are the element indices (in base-256 digits, exact in any float
dtype), so fused blocks, replicated KV heads and padded vocab rows need no second description here. A gather
is a sum of zero-padded whole tensors over the tensor-parallel group (the one gather CPU's sub-groups run),
divided by how many ranks hold each element.
"""
import math

import numpy as np
import mindspore as ms

from ..weight_loading import ArraySource, weight_loaders

_BASE = 256


def tp_mesh(model):
    """The model's TPMesh when it is split over more than one rank, else None."""
    mesh = getattr(model, "tp_mesh", None)
    return mesh if mesh is not None and mesh.size > 1 else None


class TPLayout:
    """Per sharded parameter of `model`: (full shape, flat index + 1 of each local element in the whole tensor,
    0 for padding). Built once per model; every rank of the tensor-parallel group builds it (no collectives)."""

    def __init__(self, model):
        self.mesh = tp_mesh(model)
        self.owners = {name: cell for name, (cell, _) in weight_loaders(model).items()}
        self.params = dict(model.parameters_and_names())
        self._index = {}
        self._factor = None

    def is_sharded(self, name):
        return name in self.owners

    def index(self, name):
        if name not in self._index:
            cell, param = self.owners[name], self.params[name]
            full = tuple(cell.full_shape(param))
            size = int(np.prod(full, dtype=np.int64))
            saved = param.value().copy()
            flat = np.arange(1, size + 1, dtype=np.int64)
            local = np.zeros(param.shape, np.int64)
            try:
                for d in range(max(1, math.ceil(math.log(size + 1, _BASE)))):
                    digit = ((flat // _BASE ** d) % _BASE).astype(np.float32).reshape(full)
                    cell.weight_loader(param, ArraySource(digit))
                    local += np.rint(param.astype(ms.float32).asnumpy()).astype(np.int64) * _BASE ** d
            finally:
                param.set_data(saved)
            self._index[name] = (full, local.ravel())
        return self._index[name]

    def local_of(self, name, full_array):
        """This rank's slice of the whole tensor `full_array` (float32 numpy)."""
        if not self.is_sharded(name):
            return np.asarray(full_array, np.float32)
        full, index = self.index(name)
        padded = np.concatenate([np.zeros(1, np.float32), np.asarray(full_array, np.float32).reshape(-1)])
        return padded[index].reshape(self.params[name].shape)

    def gather(self, name, local_array):
        """The whole tensor from every tensor-parallel rank's slice (a collective: all ranks of the group call it
        for the same names in the same order). Unsharded parameters are returned as they are."""
        local_array = np.asarray(local_array, np.float32)
        if not self.is_sharded(name):
            return local_array
        from ..parallel.mesh import gather_by_sum

        full, index = self.index(name)
        size = int(np.prod(full, dtype=np.int64))
        buf = np.zeros(2 * (size + 1), np.float32)
        buf[index] = local_array.reshape(-1)
        buf[size + 1 + index] = 1.0
        total = gather_by_sum(self.mesh.group)(ms.Tensor(buf)).asnumpy()
        return (total[1:size + 1] / np.maximum(total[size + 2:], 1.0)).reshape(full)

    def norm_weights(self, names):
        """1 / (how many ranks hold each element) per parameter (uniform across a parameter for every layout
        the parallel layers make), so that summing squared gradients over the group counts each element once."""
        if self._factor is None:
            from ..parallel.mesh import gather_by_sum

            held = np.array([float((self.index(n)[1] > 0).sum()) if self.is_sharded(n) else 0.0 for n in names],
                            np.float32)
            held = gather_by_sum(self.mesh.group)(ms.Tensor(held)).asnumpy()
            self._factor = {}
            for n, count in zip(names, held):
                if self.is_sharded(n):
                    self._factor[n] = float(np.prod(self.index(n)[0])) / float(count)
                else:
                    self._factor[n] = 1.0 / self.mesh.size
        return [self._factor[n] for n in names]


def layout(trainer):
    model = trainer.model
    if tp_mesh(model) is None:
        return None
    cached = getattr(trainer, "_tp_layout", None)
    if cached is None or cached.params.keys() != dict(model.parameters_and_names()).keys():
        cached = trainer._tp_layout = TPLayout(model)
    return cached


def sharded_global_norm(grads, names, tp_layout):
    """torch's total_norm of the whole model's gradients from this rank's slices: one scalar sum over the group."""
    from ..parallel.mesh import gather_by_sum

    total = 0.0
    for g, w in zip(grads, tp_layout.norm_weights(names)):
        a = (g if g.dtype == ms.float32 else g.astype(ms.float32)).asnumpy().ravel()
        total += float(np.dot(a, a)) * w
    total = gather_by_sum(tp_layout.mesh.group)(ms.Tensor(np.array([total], np.float32))).asnumpy()[0]
    return math.sqrt(max(float(total), 0.0))


class WholeStateDict(dict):
    """A tensor-parallel model's state gathered into whole tensors: save_pretrained writes it (it refuses a
    sharded model's own slices)."""
    whole_tensors = True


def gathered_state_dict(model, tp_layout):
    """{name: whole tensor} of a tensor-parallel model, in each parameter's dtype (every rank calls it)."""
    state = WholeStateDict()
    for name, param in model.parameters_and_names():
        value = tp_layout.gather(name, param.astype(ms.float32).asnumpy())
        state[name] = ms.Tensor(value).astype(param.dtype)
    return state
