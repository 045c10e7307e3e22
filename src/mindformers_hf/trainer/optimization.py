"""Optimizer, learning-rate schedules and loss scaling with torch's / transformers' exact semantics.

- `AdamW` is torch.optim.AdamW (bias-corrected moments, decoupled weight decay) on MindSpore parameters.
  It runs MindSpore's fused `AdamWeightDecay` kernel (one op per parameter, CPU and Ascend), which has no
  bias correction; torch's update is recovered exactly by rescaling the kernel's scalars each step:
      torch:  p <- p(1 - lr*wd) - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
      kernel: p <- p - lr' * (m / (sqrt(v) + eps') + wd' * p)
      with    lr' = lr*sqrt(bc2)/bc1,  eps' = eps*sqrt(bc2),  wd' = wd*bc1/sqrt(bc2).
- `get_scheduler` takes transformers' scheduler names and gives the same learning rate at every step
  (the lambdas follow transformers/optimization.py); the scheduler object behaves like torch's LambdaLR.
- `GradScaler` is torch.amp.GradScaler's dynamic loss scaling, for fp16 training.
"""
import math
from functools import partial

import numpy as np
import mindspore as ms
from mindspore import Parameter, ops



class AdamW:
    """torch.optim.AdamW over MindSpore parameters, grouped like torch: [{"params": [...], "weight_decay": x}].

    `step(grads)` takes the gradients in the order of `self.params` (all groups, in order). Parameters
    must be float32 (fp16 training keeps float32 master copies and hands those in).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, names=None):
        groups = list(params)
        if not groups or not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.param_groups = [{**self.defaults, **group, "params": list(group["params"])} for group in groups]
        self.params = [p for group in self.param_groups for p in group["params"]]
        # Optimizer state is saved under these names (the model's parameter names, given by the Trainer).
        self.names = list(names) if names is not None else [p.name for p in self.params]
        if len(set(self.names)) != len(self.names):
            raise ValueError("AdamW: parameter names must be unique (they key the saved optimizer state)")
        # The kernel updates parameters in place. A parameter loaded zero-copy from a read-only file mapping
        # (GGUF float32 tensors) would crash it (SIGSEGV): give each one its own memory first.
        for param in self.params:
            param.set_data(param.copy())
        self.exp_avg = [_zeros_like(p, "exp_avg") for p in self.params]
        self.exp_avg_sq = [_zeros_like(p, "exp_avg_sq") for p in self.params]
        self.step_count = 0
        self._kernel = ops.AdamWeightDecay()

    def step(self, grads):
        if len(grads) != len(self.params):
            raise ValueError(f"AdamW.step got {len(grads)} gradients for {len(self.params)} parameters")
        self.step_count += 1
        t = self.step_count
        index = 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            bc1, bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
            lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
            kernel_lr = lr * math.sqrt(bc2) / bc1
            kernel_eps = eps * math.sqrt(bc2)
            kernel_wd = wd * bc1 / math.sqrt(bc2)
            for param in group["params"]:
                grad = grads[index]
                if grad.dtype != param.dtype:
                    grad = grad.astype(param.dtype)
                self._kernel(param, self.exp_avg[index], self.exp_avg_sq[index], kernel_lr, beta1, beta2,
                             kernel_eps, kernel_wd, grad)
                index += 1

    def zero_grad(self, set_to_none=True):
        """Gradients are values returned by the step function, not stored on parameters: nothing to clear."""

    # ------------------------------------------------------------------ state (see checkpointing.py)
    def state_tensors(self):
        """{"exp_avg.<name>": Parameter, "exp_avg_sq.<name>": Parameter} for every optimized parameter."""
        out = {}
        for name, m, v in zip(self.names, self.exp_avg, self.exp_avg_sq):
            out[f"exp_avg.{name}"] = m
            out[f"exp_avg_sq.{name}"] = v
        return out

    def state_meta(self):
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
                  for g in self.param_groups]
        return {"step": self.step_count, "param_groups": groups,
                "group_sizes": [len(g["params"]) for g in self.param_groups]}

    def load_state(self, meta, arrays):
        if meta["group_sizes"] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"Optimizer state has parameter groups of sizes {meta['group_sizes']}, this optimizer "
                             f"has {[len(g['params']) for g in self.param_groups]}")
        for key, value in arrays.items():
            if key not in self.state_tensors():
                raise ValueError(f"Optimizer state has {key!r}, which is not a parameter being trained")
        tensors = self.state_tensors()
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
                group[key] = tuple(value) if key == "betas" else value


def _zeros_like(param, kind):
    return Parameter(ops.zeros(param.shape, ms.float32), name=f"{kind}.{param.name}", requires_grad=False)


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


# ---------------------------------------------------------------------- schedules (transformers' lambdas)
def _constant(step):
    return 1.0


def _constant_with_warmup(step, *, num_warmup_steps):
    if step < num_warmup_steps:
        return float(step) / float(max(1.0, num_warmup_steps))
    return 1.0


def _linear(step, *, num_warmup_steps, num_training_steps):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))


def _cosine(step, *, num_warmup_steps, num_training_steps, num_cycles=0.5, min_lr_rate=0.0):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0.0, factor * (1 - min_lr_rate) + min_lr_rate)


def _cosine_hard_restarts(step, *, num_warmup_steps, num_training_steps, num_cycles=1):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial(step, *, num_warmup_steps, num_training_steps, lr_end, power, lr_init):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    if step > num_training_steps:
        return lr_end / lr_init
    decay_steps = num_training_steps - num_warmup_steps
    remaining = 1 - (step - num_warmup_steps) / decay_steps
    return ((lr_init - lr_end) * remaining ** power + lr_end) / lr_init


def _inverse_sqrt(step, *, num_warmup_steps, timescale):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    return 1.0 / math.sqrt((step + timescale - num_warmup_steps) / timescale)


def _cosine_warmup_lr_rate(step, *, num_warmup_steps, num_training_steps, num_cycles=0.5, min_lr_rate=0.0,
                           warmup_lr_rate=None):
    step, num_warmup_steps, num_training_steps = float(step), float(num_warmup_steps), float(num_training_steps)
    if step < num_warmup_steps:
        if warmup_lr_rate is None:
            return (step + 1.0) / max(1.0, num_warmup_steps)
        return float(warmup_lr_rate) + (1.0 - float(warmup_lr_rate)) * step / max(1, num_warmup_steps - 1)
    progress = (step - num_warmup_steps + 1.0) / max(1.0, num_training_steps - num_warmup_steps)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0.0, factor * (1 - min_lr_rate) + min_lr_rate)


def _wsd(step, *, num_warmup_steps, num_stable_steps, num_decay_steps, warmup_type, decay_type, min_lr_ratio,
         num_cycles):
    shapes = {"linear": lambda p: p, "cosine": lambda p: 0.5 * (1.0 - math.cos(math.pi * p)),
              "1-sqrt": lambda p: 1.0 - math.sqrt(1.0 - p)}
    decays = {"linear": lambda p: 1.0 - p, "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * p)),
              "1-sqrt": lambda p: 1.0 - math.sqrt(p)}
    if step < num_warmup_steps:
        factor = shapes[warmup_type](float(step) / float(max(1, num_warmup_steps)))
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < num_warmup_steps + num_stable_steps:
        return 1.0
    if step < num_warmup_steps + num_stable_steps + num_decay_steps:
        progress = float(step - num_warmup_steps - num_stable_steps) / float(max(1, num_decay_steps))
        return max(0.0, decays[decay_type](progress) * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


class LambdaLR:
    """torch.optim.lr_scheduler.LambdaLR: lr = initial lr * lr_lambda(step); created at step 0."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        self.lr_lambdas = lr_lambda if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * len(
            optimizer.param_groups)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def step(self):
        self.last_epoch += 1
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base_lr * fn(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = list(state["base_lrs"])
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["initial_lr"] = base_lr
            group["lr"] = base_lr * fn(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


SCHEDULER_NAMES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                   "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")


def get_scheduler(name, optimizer, num_warmup_steps=None, num_training_steps=None, scheduler_specific_kwargs=None):
    """transformers.get_scheduler for our optimizer: same names, same arguments, same learning rates."""
    name = getattr(name, "value", name)
    kwargs = dict(scheduler_specific_kwargs or {})
    if name in ("reduce_lr_on_plateau", "greedy"):
        raise NotImplementedError(f"lr_scheduler_type={name!r} is not supported; supported: {SCHEDULER_NAMES}")
    if name not in SCHEDULER_NAMES:
        raise ValueError(f"Unknown lr_scheduler_type {name!r}; supported: {SCHEDULER_NAMES}")
    if name == "constant":
        return LambdaLR(optimizer, _constant)
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    if name == "constant_with_warmup":
        return LambdaLR(optimizer, partial(_constant_with_warmup, num_warmup_steps=num_warmup_steps))
    if name == "inverse_sqrt":
        timescale = kwargs.pop("timescale", None) or num_warmup_steps or 10_000
        return LambdaLR(optimizer, partial(_inverse_sqrt, num_warmup_steps=num_warmup_steps, timescale=timescale))
    if name == "warmup_stable_decay":
        num_stable_steps = kwargs.pop("num_stable_steps", None)
        if num_stable_steps is None:
            if num_training_steps is None:
                raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
            num_stable_steps = num_training_steps - num_warmup_steps - kwargs["num_decay_steps"]
        fn = partial(_wsd, num_warmup_steps=num_warmup_steps, num_stable_steps=num_stable_steps,
                     num_decay_steps=kwargs.pop("num_decay_steps"), warmup_type=kwargs.pop("warmup_type", "linear"),
                     decay_type=kwargs.pop("decay_type", "cosine"), min_lr_ratio=kwargs.pop("min_lr_ratio", 0),
                     num_cycles=kwargs.pop("num_cycles", 0.5))
        _no_extra(name, kwargs)
        return LambdaLR(optimizer, fn)
    if num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    steps = dict(num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps)
    lr_init = optimizer.defaults["lr"]
    if name == "linear":
        fn = partial(_linear, **steps)
    elif name == "cosine":
        fn = partial(_cosine, **steps, num_cycles=kwargs.pop("num_cycles", 0.5))
    elif name == "cosine_with_restarts":
        fn = partial(_cosine_hard_restarts, **steps, num_cycles=kwargs.pop("num_cycles", 1))
    elif name == "polynomial":
        lr_end, power = kwargs.pop("lr_end", 1e-7), kwargs.pop("power", 1.0)
        if not lr_init > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
        fn = partial(_polynomial, **steps, lr_end=lr_end, power=power, lr_init=lr_init)
    else:  # the two min-lr cosines
        min_lr, min_lr_rate = kwargs.pop("min_lr", None), kwargs.pop("min_lr_rate", None)
        if min_lr is not None and min_lr_rate is not None:
            raise ValueError("Only one of min_lr or min_lr_rate should be set")
        if min_lr is not None:
            min_lr_rate = min_lr / lr_init
        elif min_lr_rate is None:
            raise ValueError("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`")
        if name == "cosine_with_min_lr":
            fn = partial(_cosine, **steps, num_cycles=kwargs.pop("num_cycles", 0.5), min_lr_rate=min_lr_rate)
        else:
            fn = partial(_cosine_warmup_lr_rate, **steps, num_cycles=kwargs.pop("num_cycles", 0.5),
                         min_lr_rate=min_lr_rate, warmup_lr_rate=kwargs.pop("warmup_lr_rate", None))
    _no_extra(name, kwargs)
    return LambdaLR(optimizer, fn)


def _no_extra(name, kwargs):
    if kwargs:  # transformers raises TypeError from the schedule function for these too
        raise TypeError(f"lr scheduler {name!r} got unexpected keyword argument(s) {sorted(kwargs)}")


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
