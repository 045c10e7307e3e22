"""The optimizers behind `TrainingArguments.optim`, with the update rules of the classes transformers picks.

transformers' Trainer maps `optim` to a torch optimizer (transformers/trainer_optimizer.py): AdamW for the
`adamw_torch*` names, `torch.optim.SGD` / `Adagrad` / `RMSprop` for "sgd" / "adagrad" / "rmsprop" (extra
hyper-parameters from `optim_args`, e.g. "momentum=0.9,nesterov=True"), and transformers' own `Adafactor`
(with `scale_parameter=False, relative_step=False`, the Trainer's learning rate and schedule) for
"adafactor". Here the same names build optimizers with the same update, written with MindSpore ops on
float32 parameters. Every other name (8-bit, paged, GaLore, LOMO, schedule-free, ...) raises, naming it.
`OptimizerSetupMixin` is the Trainer's part that builds them (create_optimizer / create_scheduler).
"""
import math
import re

from mindspore import nn, ops

from ..layers import LayerNorm
from .optimization import AdamW, Optimizer
from .schedules import get_scheduler

# transformers' name patterns for parameters without weight decay (Trainer.get_decay_parameter_names)
_NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
ADAMW_OPTIMS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused")
SUPPORTED_OPTIMS = ADAMW_OPTIMS + ("adafactor", "sgd", "adagrad", "rmsprop")


def _flag(value):
    return str(value).lower() in ("true", "1", "yes")


class SGD(Optimizer):
    """torch.optim.SGD: L2 weight decay added to the gradient, (Nesterov) momentum with dampening."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 names=None):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov), names)

    def _state_shapes(self, param):
        return {"momentum_buffer": param.shape} if self.defaults["momentum"] else {}

    def _update(self, index, param, grad, group, step):
        wd, momentum = float(group["weight_decay"]), float(group["momentum"])
        if wd:
            grad = grad + wd * param
        if momentum:
            buf = self.state[index]["momentum_buffer"]
            # torch starts the buffer at the first gradient (no dampening on it), not at zero
            new_buf = grad if step == 1 else buf * momentum + (1.0 - float(group["dampening"])) * grad
            ops.assign(buf, new_buf)
            grad = grad + momentum * new_buf if group["nesterov"] else new_buf
        ops.assign(param, param - float(group["lr"]) * grad)


class Adagrad(Optimizer):
    """torch.optim.Adagrad (accumulated squared gradients, learning-rate decay per step)."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, names=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps), names)

    def _state_shapes(self, param):
        return {"sum": param.shape}

    def _update(self, index, param, grad, group, step):
        if group["weight_decay"]:
            grad = grad + float(group["weight_decay"]) * param
        clr = float(group["lr"]) / (1 + (step - 1) * float(group["lr_decay"]))
        total = self.state[index]["sum"]
        ops.assign(total, total + grad * grad)
        ops.assign(param, param - clr * grad / (ops.sqrt(total) + float(group["eps"])))


class RMSprop(Optimizer):
    """torch.optim.RMSprop (optionally centered, with momentum)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 names=None):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered), names)

    def _state_shapes(self, param):
        shapes = {"square_avg": param.shape}
        if self.defaults["momentum"]:
            shapes["momentum_buffer"] = param.shape
        if self.defaults["centered"]:
            shapes["grad_avg"] = param.shape
        return shapes

    def _update(self, index, param, grad, group, step):
        state, alpha, eps = self.state[index], float(group["alpha"]), float(group["eps"])
        if group["weight_decay"]:
            grad = grad + float(group["weight_decay"]) * param
        square_avg = state["square_avg"] * alpha + (1 - alpha) * grad * grad
        ops.assign(state["square_avg"], square_avg)
        if group["centered"]:
            grad_avg = state["grad_avg"] * alpha + (1 - alpha) * grad
            ops.assign(state["grad_avg"], grad_avg)
            avg = ops.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            avg = ops.sqrt(square_avg) + eps
        if group["momentum"]:
            buf = state["momentum_buffer"] * float(group["momentum"]) + grad / avg
            ops.assign(state["momentum_buffer"], buf)
            ops.assign(param, param - float(group["lr"]) * buf)
        else:
            ops.assign(param, param - float(group["lr"]) * grad / avg)


class Adafactor(Optimizer):
    """transformers.optimization.Adafactor: factored second moments for matrices, update clipping, optional
    first moment, a relative step size (default) or an external learning rate (relative_step=False, the form
    TrainingArguments(optim="adafactor") uses)."""

    def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                 weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False, names=None):
        if lr is not None and relative_step:
            raise ValueError("Cannot combine manual `lr` and `relative_step=True` options")
        if warmup_init and not relative_step:
            raise ValueError("`warmup_init=True` requires `relative_step=True`")
        super().__init__(params, dict(lr=lr, eps=tuple(eps), clip_threshold=clip_threshold, decay_rate=decay_rate,
                                      beta1=beta1, weight_decay=weight_decay, scale_parameter=scale_parameter,
                                      relative_step=relative_step, warmup_init=warmup_init), names)

    def _state_shapes(self, param):
        shape = tuple(param.shape)
        shapes = {"exp_avg": shape} if self.defaults["beta1"] is not None else {}
        if len(shape) >= 2:
            shapes.update(exp_avg_sq_row=shape[:-1], exp_avg_sq_col=shape[:-2] + shape[-1:])
        else:
            shapes["exp_avg_sq"] = shape
        return shapes

    @staticmethod
    def _rms(tensor):
        return ops.norm(tensor.reshape(-1)) / math.sqrt(tensor.size)

    def _update(self, index, param, grad, group, step):
        state = self.state[index]
        if group["relative_step"]:  # the step size schedules itself: min(1e-2 (or 1e-6 t), 1/sqrt(t))
            lr = min(1e-6 * step if group["warmup_init"] else 1e-2, 1.0 / math.sqrt(step))
        else:
            lr = float(group["lr"])
        if group["scale_parameter"]:
            lr *= max(float(group["eps"][1]), float(self._rms(param).asnumpy()))
        beta2t = 1.0 - math.pow(step, group["decay_rate"])
        update = grad * grad + float(group["eps"][0])
        if "exp_avg_sq_row" in state:
            row = state["exp_avg_sq_row"] * beta2t + update.mean(axis=-1) * (1.0 - beta2t)
            col = state["exp_avg_sq_col"] * beta2t + update.mean(axis=-2) * (1.0 - beta2t)
            ops.assign(state["exp_avg_sq_row"], row)
            ops.assign(state["exp_avg_sq_col"], col)
            r_factor = ops.rsqrt(row / row.mean(axis=-1, keep_dims=True)).expand_dims(-1)
            update = r_factor * ops.rsqrt(col).expand_dims(-2) * grad
        else:
            sq = state["exp_avg_sq"] * beta2t + update * (1.0 - beta2t)
            ops.assign(state["exp_avg_sq"], sq)
            update = ops.rsqrt(sq) * grad
        update = update / ops.clamp(self._rms(update) / float(group["clip_threshold"]), min=1.0)
        update = update * lr
        if group["beta1"] is not None:
            beta1 = float(group["beta1"])
            update = state["exp_avg"] * beta1 + update * (1 - beta1)
            ops.assign(state["exp_avg"], update)
        new = param * (1.0 - float(group["weight_decay"]) * lr) if group["weight_decay"] else param
        ops.assign(param, new - update)


def check_optim(args):
    """Raise at Trainer construction for an `optim` we do not implement, naming it."""
    optim = getattr(args.optim, "value", args.optim)
    if optim not in SUPPORTED_OPTIMS:
        raise NotImplementedError(
            f"TrainingArguments.optim={optim!r} is not supported by mindformers_hf's Trainer; supported: "
            f"{', '.join(SUPPORTED_OPTIMS)} (bitsandbytes, paged, GaLore, APOLLO, LOMO, torchao and schedule-free "
            "optimizers are torch/CUDA libraries)")


def optimizer_from_args(args, groups, names):
    """The optimizer transformers' Trainer builds for `args.optim` (its get_optimizer_cls_and_kwargs), on
    our parameter groups (decay / no decay, as create_optimizer splits them)."""
    check_optim(args)
    optim = getattr(args.optim, "value", args.optim)
    optim_args = {}
    for pair in (args.optim_args or "").replace(" ", "").split(","):  # transformers' "k=v,k=v" format
        if pair:
            key, value = pair.split("=")
            optim_args[key] = value
    if getattr(args, "zero_stage", 0) == 1:
        sharded = zero_optimizer(args, optim, groups, names)
        if sharded is not None:
            return sharded
    if optim in ADAMW_OPTIMS:
        return AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                     names=names)
    if optim == "adafactor":
        return Adafactor(groups, lr=args.learning_rate, scale_parameter=False, relative_step=False, names=names)
    if optim == "sgd":
        kwargs = {k: float(optim_args[k]) for k in ("momentum", "dampening", "weight_decay") if k in optim_args}
        if "nesterov" in optim_args:
            kwargs["nesterov"] = _flag(optim_args["nesterov"])
        return SGD(groups, lr=args.learning_rate, names=names, **kwargs)
    if optim == "adagrad":
        kwargs = {k: float(optim_args[k]) for k in ("lr_decay", "weight_decay", "eps") if k in optim_args}
        return Adagrad(groups, lr=args.learning_rate, names=names, **kwargs)
    if optim == "rmsprop":
        kwargs = {k: float(optim_args[k]) for k in ("momentum", "alpha", "eps", "weight_decay") if k in optim_args}
        if "centered" in optim_args:
            kwargs["centered"] = _flag(optim_args["centered"])
        return RMSprop(groups, lr=args.learning_rate, names=names, **kwargs)
    raise AssertionError(optim)  # check_optim lets through only the names handled above


def zero_optimizer(args, optim, groups, names):
    """ZeRO stage 1's AdamW over the data-parallel ranks (None in a world of one replica: nothing to split)."""
    from . import distributed as dist
    from .zero import ZeroAdamW

    if optim not in ADAMW_OPTIMS:
        raise NotImplementedError(f"ZeRO stage 1 (optimizer-state sharding) supports AdamW only, not optim={optim!r}")
    size = dist.data_parallel_size()
    if size == 1:
        return None
    return ZeroAdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                     names=names, rank=dist.data_parallel_rank(), size=size, **dist._dp_kwargs())


class OptimizerSetupMixin:
    """The Trainer's create_optimizer / create_scheduler, as transformers': decay and no-decay groups of the
    trainable parameters (their float32 masters under mixed precision), the optimizer `args.optim` names and
    the `lr_scheduler_type` schedule. Reads from the Trainer: args, model, optimizer, lr_scheduler, _mixed,
    _masters."""

    def get_decay_parameter_names(self, model):
        """Names that get weight decay: not biases, not norms (transformers' patterns), not in a LayerNorm (ours
        stands for torch's nn.LayerNorm, which transformers excludes by type: GPT-2's ln_1 / ln_2 / ln_f).
        A remote-code format read through a renaming table (weights.CheckpointFormatMixin's `weight_table`) is
        judged by its checkpoint names, the names transformers' Trainer sees on the format's own code: Qwen v1's
        RMSNorm weights `ln_1` / `ln_2` / `ln_f` (a custom class, not nn.LayerNorm) match no pattern, so they are
        decayed there and here."""
        patterns = [re.compile(p) for p in _NO_DECAY_PATTERNS]
        in_layernorm = set()
        for cell_name, cell in model.cells_and_names():
            if isinstance(cell, (nn.LayerNorm, LayerNorm)):
                in_layernorm.update(f"{cell_name}.{n}" if cell_name else n for n, _ in cell.parameters_and_names())
        checkpoint_name = model.checkpoint_key_of if getattr(model, "weight_table", None) else (lambda name: name)
        return [name for name, _ in model.parameters_and_names()
                if name not in in_layernorm and not any(p.search(checkpoint_name(name).lower()) for p in patterns)]

    def _trainable(self):
        named = [(n, p) for n, p in self.model.parameters_and_names() if p.requires_grad]
        if not named:
            raise ValueError("The model has no parameter with requires_grad=True: nothing to train")
        return named

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            decay = set(self.get_decay_parameter_names(model or self.model))
            named = self._trainable()
            targets = dict(named) if self._mixed is None else self._masters
            decay_names = [n for n, _ in named if n in decay]
            other_names = [n for n, _ in named if n not in decay]
            groups = [{"params": [targets[n] for n in decay_names], "weight_decay": self.args.weight_decay},
                      {"params": [targets[n] for n in other_names], "weight_decay": 0.0}]
            self.optimizer = optimizer_from_args(self.args, groups, decay_names + other_names)
            self._created_optimizer = True
        return self.optimizer

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type, optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps, scheduler_specific_kwargs=self.args.lr_scheduler_kwargs)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps):
        self.create_optimizer()
        self.create_scheduler(num_training_steps)

    def _get_learning_rate(self):
        return self.lr_scheduler.get_last_lr()[0]

