"""Optimizer, gradient clipping and loss scaling with torch's / transformers' exact semantics.

- `AdamW` is torch.optim.AdamW (bias-corrected moments, decoupled weight decay) on MindSpore parameters.
  It runs MindSpore's fused `AdamWeightDecay` kernel (one op per parameter, CPU and Ascend), which has no
  bias correction; torch's update is recovered exactly by rescaling the kernel's scalars each step:
      torch:  p <- p(1 - lr*wd) - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
      kernel: p <- p - lr' * (m / (sqrt(v) + eps') + wd' * p)
      with    lr' = lr*sqrt(bc2)/bc1,  eps' = eps*sqrt(bc2),  wd' = wd*bc1/sqrt(bc2).
- The learning-rate schedules (`get_scheduler`, `LambdaLR`) are in schedules.py.
- `GradScaler` is torch.amp.GradScaler's dynamic loss scaling, for fp16 training.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, ops



class Optimizer:
    """What our optimizers share: torch-style parameter groups, the names their state is saved under, and
    per-parameter state tensors ("<kind>.<name>" in optimizer.safetensors, see checkpointing.py).

    `step(grads)` takes the gradients in the order of `self.params` (all groups, in order; None skips a
    parameter, as torch skips one whose .grad is None). Parameters must be float32 (fp16 training keeps
    float32 master copies and hands those in). A subclass defines `_state_shapes(param)` ({kind: shape} of its
    state for one parameter, zeros at the start) and `_update(index, param, grad, group, step)`.
    """

    def __init__(self, params, defaults, names=None):
        groups = list(params)
        if not groups or not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = dict(defaults)
        self.param_groups = [{**self.defaults, **group, "params": list(group["params"])} for group in groups]
        self.params = [p for group in self.param_groups for p in group["params"]]
        # Optimizer state is saved under these names (the model's parameter names, given by the Trainer).
        self.names = list(names) if names is not None else [p.name for p in self.params]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"{type(self).__name__}: parameter names must be unique (they key the saved "
                             "optimizer state)")
        # Updates write parameters in place. A parameter loaded zero-copy from a read-only file mapping
        # (GGUF float32 tensors) would crash the kernel (SIGSEGV): give each one its own memory first.
        for param in self.params:
            param.set_data(param.copy())
        self.state = [{kind: _zeros(shape, f"{kind}.{param.name}") for kind, shape in self._state_shapes(param).items()}
                      for param in self.params]
        self.step_count = 0

    def _state_shapes(self, param):
        return {}

    def step(self, grads):
        if len(grads) != len(self.params):
            raise ValueError(f"{type(self).__name__}.step got {len(grads)} gradients for {len(self.params)} "
                             "parameters")
        self.step_count += 1
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                grad = grads[index]
                if grad is None:  # as torch: a parameter without a gradient (frozen) is not updated
                    index += 1
                    continue
                if grad.dtype != param.dtype:
                    grad = grad.astype(param.dtype)
                self._update(index, param, grad, group, self.step_count)
                index += 1

    def zero_grad(self, set_to_none=True):
        """Gradients are values returned by the step function, not stored on parameters: nothing to clear."""

    # ------------------------------------------------------------------ state (see checkpointing.py)
    def state_tensors(self):
        """{"<kind>.<name>": Parameter} for every state tensor of every optimized parameter."""
        return {f"{kind}.{name}": tensor for name, state in zip(self.names, self.state)
                for kind, tensor in state.items()}

    def state_meta(self):
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
                  for g in self.param_groups]
        return {"step": self.step_count, "param_groups": groups,
                "group_sizes": [len(g["params"]) for g in self.param_groups]}

    def load_state(self, meta, arrays):
        if meta["group_sizes"] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"Optimizer state has parameter groups of sizes {meta['group_sizes']}, this optimizer "
                             f"has {[len(g['params']) for g in self.param_groups]}")
        tensors = self.state_tensors()
        for key in arrays:
            if key not in tensors:
                raise ValueError(f"Optimizer state has {key!r}, which is not a parameter being trained")
        missing = sorted(set(tensors) - set(arrays))
        if missing:
            raise ValueError(f"Optimizer state lacks {len(missing)} tensor(s), e.g. {missing[0]!r}")
        for key, target in tensors.items():
            array = arrays[key]
            if tuple(array.shape) != tuple(target.shape):
                raise ValueError(f"Optimizer state {key!r} has shape {array.shape}, expected {target.shape}")
            target.set_data(ms.Tensor(np.ascontiguousarray(array, dtype=np.float32)))
        self.step_count = int(meta["step"])
        for group, saved in zip(self.param_groups, meta["param_groups"]):
            for key, value in saved.items():
                group[key] = tuple(value) if isinstance(group.get(key), tuple) else value


class AdamW(Optimizer):
    """torch.optim.AdamW over MindSpore parameters, grouped like torch: [{"params": [...], "weight_decay": x}]."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, names=None):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay), names)
        self._kernel = ops.AdamWeightDecay()

    def _state_shapes(self, param):
        return {"exp_avg": param.shape, "exp_avg_sq": param.shape}

    def _update(self, index, param, grad, group, t):
        beta1, beta2 = group["betas"]
        bc1, bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        state = self.state[index]
        self._kernel(param, state["exp_avg"], state["exp_avg_sq"], lr * math.sqrt(bc2) / bc1, beta1, beta2,
                     eps * math.sqrt(bc2), wd * bc1 / math.sqrt(bc2), grad)


def _zeros(shape, name):
    return Parameter(ops.zeros(tuple(shape), ms.float32), name=name, requires_grad=False)


# ---------------------------------------------------------------------- global-norm clipping
def global_norm(grads):
    """The 2-norm of all gradients together, as a Python float (torch.nn.utils.clip_grad_norm_'s total_norm)."""
    # On the host: one BLAS dot per gradient, summed in float64. The MindSpore form (square, sum, addn: three
    # ops per tensor and a full-size squared copy of every gradient) took 0.7 s per step on SmolLM2-135M.
    total = 0.0
    for g in grads:
        a = (g if g.dtype == ms.float32 else g.astype(ms.float32)).asnumpy().ravel()
        total += float(np.dot(a, a))
    return math.sqrt(total)


def clip_by_global_norm(grads, max_norm, total_norm):
    """torch's rule: scale by max_norm / (total_norm + 1e-6) when that is below 1. The list's entries are
    replaced one by one (and the list returned), so each old gradient can be freed as soon as its scaled copy
    exists: building a new list held a second copy of every gradient at once (540 MB for SmolLM2)."""
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        for i, g in enumerate(grads):
            grads[i] = g * ms.Tensor(coef, g.dtype)
    return grads


# ---------------------------------------------------------------------- fp16 loss scaling
class GradScaler:
    """torch.amp.GradScaler's dynamic loss scale: halve and skip the step on inf/nan gradients, double after
    `growth_interval` clean steps in a row."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.growth_tracker = 0

    def update(self, found_inf):
        if found_inf:
            self.scale *= self.backoff_factor
            self.growth_tracker = 0
        else:
            self.growth_tracker += 1
            if self.growth_tracker == self.growth_interval:
                self.scale *= self.growth_factor
                self.growth_tracker = 0

    def state_dict(self):
        return {"scale": self.scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self.growth_tracker}

    def load_state_dict(self, state):
        self.scale = float(state["scale"])
        self.growth_factor, self.backoff_factor = float(state["growth_factor"]), float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self.growth_tracker = int(state["_growth_tracker"])


def all_finite(grads):
    return bool(ops.isfinite(ops.stack([ops.sum(g.astype(ms.float32)) for g in grads])).all().asnumpy())
