"""`Accelerator`: accelerate's training-loop API on MindSpore.

MindSpore has no `loss.backward()`: gradients are the value of a function (`mindspore.value_and_grad`), so they
must be taken while the loss is computed, not afterwards from the loss tensor. Two honest forms:

1. `outputs = model(**batch)` with `labels` (the transformers idiom): a prepared model in training mode computes
   the loss *and* its gradients in that forward; `accelerator.backward(outputs.loss)` then commits them. Any
   other tensor (`outputs.loss * 2`, a loss computed from the logits) raises: its history is not recorded.
2. `accelerator.backward(fn)` with a function computing the loss (a custom loss): the forward runs inside
   `value_and_grad`; it returns the loss. The quicktour's two lines
       outputs = model(inputs); loss = loss_function(outputs, targets); accelerator.backward(loss)
   become  `loss = accelerator.backward(lambda: loss_function(model(inputs), targets))`.

Gradients are kept by the Accelerator (scaled by 1/gradient_accumulation_steps as accelerate scales the loss),
summed over micro-batches, averaged over processes at the optimizer step, and cleared by `optimizer.zero_grad()`.
The prepared optimizer is ours (`mindformers_hf.trainer.AdamW`): its `step()` takes them from here.
"""
import contextlib
import os

import mindspore as ms
from mindspore import nn

from .. import tensor_io
from ..modeling_utils import PreTrainedModel
from ..trainer import checkpointing as ckpt
from ..trainer import distributed as dist
from ..trainer.optimization import clip_by_global_norm, global_norm
from ..utils import warn_once

_IGNORED = ("device_placement", "split_batches", "log_with", "project_dir", "project_config", "dataloader_config",
            "step_scheduler_with_optimizer", "kwargs_handlers", "dynamo_backend", "rng_types", "even_batches")


class Accelerator:
    def __init__(self, gradient_accumulation_steps=1, mixed_precision=None, cpu=False, gradient_accumulation_plugin=None,
                 **kwargs):
        for key in kwargs:
            if key not in _IGNORED:
                raise TypeError(f"Accelerator() got an unexpected keyword argument {key!r}")
            warn_once(f"Accelerator: {key}={kwargs[key]!r} is accepted and ignored (see docs/differences.md)")
        if mixed_precision not in (None, "no"):
            raise NotImplementedError(f"Accelerator(mixed_precision={mixed_precision!r}) is not supported: the loop "
                                      "trains in the model's dtype (the Trainer has bf16/fp16 training)")
        if gradient_accumulation_plugin is not None:
            gradient_accumulation_steps = gradient_accumulation_plugin.num_steps
        if int(gradient_accumulation_steps) < 1:
            raise ValueError("gradient_accumulation_steps must be >= 1")
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.sync_gradients = True
        self.step = 0
        self.end_of_dataloader = False
        self._models, self._optimizers, self._schedulers = [], [], []
        self._grads = {}  # id(Parameter) -> accumulated gradient
        self._pending = None  # (loss tensor, params, grads) of the last training forward with labels
        self._reduced = False
        self._in_closure = False
        dist.ensure_initialized()

    # ------------------------------------------------------------------ processes
    @property
    def num_processes(self):
        return dist.world_size()

    @property
    def process_index(self):
        return dist.rank()

    @property
    def local_process_index(self):
        return dist.local_rank()

    @property
    def is_main_process(self):
        return self.process_index == 0

    @property
    def is_local_main_process(self):
        return self.local_process_index == 0

    @property
    def device(self):
        """'cpu' on the CPU backend, else e.g. 'ascend:0' (MindSpore places tensors by context)."""
        from ..utils import device_target

        target = device_target()
        return "cpu" if target == "CPU" else f"{target.lower()}:{ms.get_context('device_id')}"

    @property
    def distributed_type(self):
        return "MULTI_CPU" if self.num_processes > 1 else "NO"

    def wait_for_everyone(self):
        dist.barrier()

    def print(self, *args, **kwargs):
        if self.is_local_main_process:
            print(*args, **kwargs)

    @contextlib.contextmanager
    def main_process_first(self):
        if not self.is_main_process:
            self.wait_for_everyone()
        yield
        if self.is_main_process:
            self.wait_for_everyone()

    @contextlib.contextmanager
    def autocast(self, *args, **kwargs):
        yield  # no mixed precision here: the model computes in its own dtype

    @contextlib.contextmanager
    def no_sync(self, model):
        yield  # gradients are averaged at the optimizer step, never during backward

    # ------------------------------------------------------------------ prepare
    def prepare(self, *args, device_placement=None):
        out = tuple(self._prepare_one(obj) for obj in args)
        return out[0] if len(out) == 1 else out

    def _prepare_one(self, obj):
        kind = type(obj).__module__.split(".")[0]
        if kind == "torch" and hasattr(obj, "batch_size") and hasattr(obj, "__iter__"):
            return _PreparedDataLoader(obj, self)  # a torch DataLoader: its batches are converted
        if kind == "torch":
            raise TypeError(f"prepare() got a torch {type(obj).__name__}: build it from mindformers_hf instead "
                            "(mindformers_hf.trainer.AdamW over model.parameters(), a schedule from "
                            "mindformers_hf.get_scheduler; docs/differences.md)")
        if isinstance(obj, (_PreparedModel, _PreparedOptimizer, _PreparedScheduler, _PreparedDataLoader)):
            return obj
        if isinstance(obj, nn.Cell):
            dist.broadcast_parameters([p for _, p in obj.parameters_and_names()])
            prepared = _PreparedModel(obj, self)
            self._models.append(prepared)
            return prepared
        if hasattr(obj, "param_groups") and hasattr(obj, "step"):
            prepared = _PreparedOptimizer(obj, self)
            self._optimizers.append(prepared)
            return prepared
        if hasattr(obj, "get_last_lr") and hasattr(obj, "step"):
            prepared = _PreparedScheduler(obj, self)
            self._schedulers.append(prepared)
            return prepared
        if hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes, dict)):
            return _PreparedDataLoader(obj, self)
        return obj

    def unwrap_model(self, model, keep_fp32_wrapper=True, keep_torch_compile=True):
        return model.module if isinstance(model, _PreparedModel) else model

    # ------------------------------------------------------------------ gradients
    def _trainable(self):
        seen, params = set(), []
        for model in self._models:
            for _, param in model.module.parameters_and_names():
                if param.requires_grad and id(param) not in seen:
                    seen.add(id(param))
                    params.append(param)
        if not params:
            raise ValueError("No trainable parameters: prepare() the model (with some requires_grad parameters) "
                             "before backward()")
        return params

    def backward(self, loss, **kwargs):
        """Commit the gradients of `loss` (see the module docstring). With a function, return its loss."""
        if callable(loss) and not isinstance(loss, ms.Tensor):
            params = self._trainable()
            self._in_closure = True
            try:
                value, grads = ms.value_and_grad(loss, None, weights=params)()
            finally:
                self._in_closure = False
            self._accumulate(params, grads)
            return value
        pending, self._pending = self._pending, None
        if pending is None or pending[0] is not loss:
            raise ValueError(
                "accelerator.backward(loss): MindSpore takes gradients while the loss is computed, so `loss` must be "
                "the `outputs.loss` of the prepared model's last forward in training mode with `labels=` (unchanged). "
                "For a loss computed outside the model, pass a function: "
                "`loss = accelerator.backward(lambda: loss_function(model(inputs), targets))`")
        self._accumulate(pending[1], pending[2])
        return None

    def _forward_with_grads(self, model, args, kwargs):
        params = self._trainable()
        box = {}

        def loss_fn():
            box["outputs"] = model(*args, **kwargs)
            loss = _loss_of(box["outputs"])
            if loss is None:
                raise ValueError("The model returned no loss although `labels` were passed")
            return loss

        _, grads = ms.value_and_grad(loss_fn, None, weights=params)()
        self._pending = (_loss_of(box["outputs"]), params, grads)
        return box["outputs"]

    def _accumulate(self, params, grads):
        scale = 1.0 / self.gradient_accumulation_steps
        for param, grad in zip(params, grads):
            grad = grad * scale if scale != 1.0 else grad
            key = id(param)
            self._grads[key] = grad if key not in self._grads else self._grads[key] + grad
        self._reduced = False

    def _synced_grads(self, params):
        """The accumulated gradients of `params` (None where a parameter has none), averaged over processes."""
        if not self._reduced and self.num_processes > 1:
            keys = list(self._grads)
            for key, value in zip(keys, dist.all_reduce_mean([self._grads[k] for k in keys])):
                self._grads[key] = value
        self._reduced = True
        return [self._grads.get(id(p)) for p in params]

    def clip_grad_norm_(self, parameters, max_norm, norm_type=2):
        """torch's clip_grad_norm_ on the accumulated gradients; returns the total norm before clipping."""
        if norm_type != 2:
            raise NotImplementedError("clip_grad_norm_ with norm_type other than 2 is not supported")
        params = [p for p in parameters]
        grads = self._synced_grads(params)
        present = [(p, g) for p, g in zip(params, grads) if g is not None]
        total = global_norm([g for _, g in present])
        clipped = clip_by_global_norm([g for _, g in present], max_norm, total)
        for (param, _), grad in zip(present, clipped):
            self._grads[id(param)] = grad
        return ms.Tensor(total, ms.float32)

    @contextlib.contextmanager
    def accumulate(self, *models):
        """accelerate's gradient accumulation: the optimizer and scheduler step (and zero_grad clears) only on
        every `gradient_accumulation_steps`-th batch and at the end of the data loader."""
        if self.end_of_dataloader:
            self.step = 0
            self.sync_gradients = True
        else:
            self.step += 1
            self.sync_gradients = self.step % self.gradient_accumulation_steps == 0
        yield

    # ------------------------------------------------------------------ collectives
    def gather(self, tensor):
        return _map_tensors(tensor, dist_all_gather)

    def gather_for_metrics(self, input_data, use_gather_object=False):
        if self.num_processes > 1:
            raise NotImplementedError("gather_for_metrics across processes (dropping the duplicated samples of an "
                                      "uneven last batch) is not supported yet: use gather()")
        return input_data

    def reduce(self, tensor, reduction="sum", scale=1.0):
        if reduction not in ("sum", "mean", None):
            raise ValueError(f"reduction must be 'sum', 'mean' or None, not {reduction!r}")

        def one(t):
            t = dist.all_reduce_sum([t])[0] if reduction is not None else t
            if reduction == "mean":
                t = t / self.num_processes
            return t * scale if scale != 1.0 else t

        return _map_tensors(tensor, one)

    # ------------------------------------------------------------------ saving
    def save_model(self, model, save_directory, max_shard_size="10GB", safe_serialization=True):
        """The model's weights as model.safetensors (sharded with an index above `max_shard_size`), HF keys."""
        self.unwrap_model(model).save_pretrained(save_directory, is_main_process=self.is_main_process,
                                                 max_shard_size=max_shard_size, safe_serialization=safe_serialization)

    def save(self, obj, f, safe_serialization=False):
        raise NotImplementedError("Accelerator.save (torch.save of any object) is not supported: use save_model")

    def save_state(self, output_dir=None, safe_serialization=True, **kwargs):
        """Everything needed to resume, written atomically into `output_dir` (our files, not accelerate's pickles):
        model/ (save_pretrained), optimizer/ (trainer checkpoint format), scheduler.json, rng_state.json (this
        process's generators) and accelerator_state.json; further models/optimizers/schedulers get a `_<i>` suffix."""
        if output_dir is None:
            raise ValueError("save_state needs output_dir (accelerate's automatic checkpoint naming is not supported)")
        if any(not isinstance(m.module, PreTrainedModel) or m.module._hf_peft_config_loaded for m in self._models):
            raise NotImplementedError("save_state of a model with adapters (or not a PreTrainedModel) is not "
                                      "supported: save the adapter with save_model, or train it with the Trainer")
        if self.is_main_process:
            with ckpt.atomic_folder(os.fspath(output_dir)) as tmp:
                for i, model in enumerate(self._models):
                    model.module.save_pretrained(os.path.join(tmp, _suffixed("model", i)))
                for i, optimizer in enumerate(self._optimizers):
                    folder = os.path.join(tmp, _suffixed("optimizer", i))
                    os.makedirs(folder)
                    ckpt.save_optimizer(optimizer.optimizer, folder)
                for i, scheduler in enumerate(self._schedulers):
                    ckpt.write_json(os.path.join(tmp, _suffixed("scheduler", i) + ".json"),
                                    scheduler.scheduler.state_dict())
                ckpt.write_json(os.path.join(tmp, ckpt.RNG_STATE_NAME), ckpt.rng_state())
                ckpt.write_json(os.path.join(tmp, "accelerator_state.json"), {"step": self.step})
        self.wait_for_everyone()
        return os.fspath(output_dir)

    def load_state(self, input_dir=None, **kwargs):
        """Restore what save_state wrote into the objects prepare() returned, in the same order."""
        if input_dir is None:
            raise ValueError("load_state needs input_dir")
        input_dir = os.fspath(input_dir)
        for i, model in enumerate(self._models):
            model.module.load_checkpoint_folder(os.path.join(input_dir, _suffixed("model", i)))
        for i, optimizer in enumerate(self._optimizers):
            ckpt.load_optimizer(optimizer.optimizer, os.path.join(input_dir, _suffixed("optimizer", i)))
        for i, scheduler in enumerate(self._schedulers):
            scheduler.scheduler.load_state_dict(ckpt.read_json(os.path.join(input_dir, _suffixed("scheduler", i)
                                                                            + ".json")))
        ckpt.set_rng_state(ckpt.read_json(os.path.join(input_dir, ckpt.RNG_STATE_NAME)))
        self.step = int(ckpt.read_json(os.path.join(input_dir, "accelerator_state.json"))["step"])
        self._grads.clear()
        self._pending = None

    def end_training(self):
        pass


def _suffixed(name, index):
    return name if index == 0 else f"{name}_{index}"


def _loss_of(outputs):
    if isinstance(outputs, dict):
        return outputs.get("loss")
    return getattr(outputs, "loss", None)


def _map_tensors(data, fn):
    if isinstance(data, (list, tuple)):
        return type(data)(_map_tensors(d, fn) for d in data)
    if isinstance(data, dict):
        return type(data)({k: _map_tensors(v, fn) for k, v in data.items()})
    return fn(tensor_io.to_mindspore(data)) if data is not None else None


def dist_all_gather(tensor):
    if dist.world_size() == 1:
        return tensor
    from mindspore import ops

    return ops.AllGather()(tensor if tensor.ndim else tensor.reshape(1))


class _PreparedModel:
    """The model as prepare() returns it: calls in training mode with `labels` also take the gradients."""

    def __init__(self, module, accelerator):
        self.__dict__.update(module=module, _accelerator=accelerator)

    def __getattr__(self, name):
        return getattr(self.__dict__["module"], name)

    def __call__(self, *args, **kwargs):
        acc, module = self._accelerator, self.module
        if module.training and not acc._in_closure and kwargs.get("labels") is not None:
            return acc._forward_with_grads(module, args, kwargs)
        return module(*args, **kwargs)

    def train(self, mode=True):
        self.module.train(mode)
        return self

    def eval(self):
        self.module.eval()
        return self


class _PreparedOptimizer:
    """accelerate's AcceleratedOptimizer: step() and zero_grad() act only when gradients are synchronised."""

    def __init__(self, optimizer, accelerator):
        self.__dict__.update(optimizer=optimizer, _accelerator=accelerator, step_was_skipped=False)

    def __getattr__(self, name):
        return getattr(self.__dict__["optimizer"], name)

    def zero_grad(self, set_to_none=None):
        acc = self._accelerator
        if acc.sync_gradients:
            acc._grads.clear()
            acc._pending = None

    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("optimizer.step(closure) is not supported")
        acc = self._accelerator
        if not acc.sync_gradients:
            return
        params = list(self.optimizer.params)
        grads = acc._synced_grads(params)
        if all(g is None for g in grads):
            raise ValueError("optimizer.step(): no gradients; call accelerator.backward(...) first")
        self.optimizer.step(grads)


class _PreparedScheduler:
    """accelerate's AcceleratedScheduler: steps with the optimizer (not on accumulation micro-batches), once per
    process per step as accelerate does when batches are not split."""

    def __init__(self, scheduler, accelerator):
        self.__dict__.update(scheduler=scheduler, _accelerator=accelerator)

    def __getattr__(self, name):
        return getattr(self.__dict__["scheduler"], name)

    def step(self, *args, **kwargs):
        if not self._accelerator.sync_gradients:
            return
        for _ in range(self._accelerator.num_processes):
            self.scheduler.step(*args, **kwargs)


class _PreparedDataLoader:
    """Batches as MindSpore tensors; each process takes every num_processes-th batch (cycling to even counts,
    accelerate's `even_batches`); the accelerator learns when the last batch is out (for accumulate)."""

    def __init__(self, loader, accelerator):
        self.loader, self._accelerator = loader, accelerator

    def __len__(self):
        n, world = len(self.loader), self._accelerator.num_processes
        return -(-n // world)

    def _mine(self):
        acc = self._accelerator
        world, rank = acc.num_processes, acc.process_index
        if world == 1:
            yield from self.loader
            return
        batches = list(self.loader)
        per_rank = -(-len(batches) // world)
        for i in range(per_rank):
            yield batches[(i * world + rank) % len(batches)]

    def __iter__(self):
        acc = self._accelerator
        acc.end_of_dataloader = False
        iterator = iter(self._mine())
        try:
            current = next(iterator)
        except StopIteration:
            return
        for upcoming in iterator:
            yield _to_ms(current)
            current = upcoming
        acc.end_of_dataloader = True
        yield _to_ms(current)

    def __getattr__(self, name):
        return getattr(self.__dict__["loader"], name)


def _to_ms(batch):
    if isinstance(batch, dict):
        return type(batch)({k: _to_ms(v) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)) and batch and not isinstance(batch[0], (int, float)):
        return type(batch)(_to_ms(v) for v in batch)
    if isinstance(batch, (str, bytes)) or batch is None:
        return batch
    return tensor_io.to_mindspore(batch)
