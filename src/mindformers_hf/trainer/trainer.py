"""Trainer: transformers' training loop on MindSpore models.

The loop follows transformers/trainer.py step for step: the same TrainingArguments, callbacks and
TrainerState, the same gradient-accumulation loss normalisation (`num_items_in_batch`), clipping, logging,
evaluation and checkpoint cadence, and the same `trainer_state.json`. What differs is underneath:
- gradients come from `mindspore.value_and_grad` over `compute_loss` (PyNative: the model runs as written);
  only parameters with `requires_grad=True` are trained;
- the optimizer is AdamW with torch's exact update (optimization.py), the schedules are transformers';
- batches come from our DataLoader (numpy shuffling; data_loader.py);
- checkpoints hold safetensors and JSON, never pickles (checkpointing.py);
- data parallel under `mindformers-hf launch` / msrun (distributed.py): each rank trains on its slice of every
  global batch, gradients are averaged with one AllReduce, rank 0 alone logs and writes;
- fp16 is mixed precision with float32 master weights and dynamic loss scaling; bf16 on the CPU backend
  trains in float32 (its kernels cannot compute in bf16), with a one-time warning.
"""
import dataclasses
import inspect
import math
import os
import shutil
import time

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    EvalLoopOutput,
    EvalPrediction,
    PredictionOutput,
    SaveStrategy,
    TrainOutput,
    compare_trainer_and_checkpoint_args,
    denumpify_detensorize,
    get_last_checkpoint,
    rotate_checkpoints,
    sort_checkpoints,
    speed_metrics,
)

from .. import runtime, tensor_io
from ..utils import device_target, logger, set_seed, warn_once
from . import checkpointing as ckpt
from . import distributed as dist
from .callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    ExportableState,
    PrinterCallback,
    ProgressCallback,
    TrainerControl,
    TrainerState,
)
from .data_loader import DataLoader, has_length
from .layer_compilation import layer_compilation
from .optimization import AdamW, GradScaler, clip_by_global_norm, global_norm
from .schedules import get_scheduler
from .training_args import TrainingArguments

IGNORE_INDEX = -100
# transformers' name patterns for parameters without weight decay (Trainer.get_decay_parameter_names)
_NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
_ADAMW_OPTIMS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_apex_fused")


def _unwrap(model):
    """The transformer under a PEFT wrapper (for label names and the loss type)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _forward_parameters(model):
    return inspect.signature(model.construct).parameters


def _nested_numpy(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_nested_numpy(v) for v in value)
    return tensor_io.to_numpy(value) if value is not None else None


def _perplexity(loss):
    """exp(mean loss), inf on overflow: transformers' run_clm.py."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def _pad_concat(a, b, padding_index=IGNORE_INDEX):
    """Concatenate along the batch axis, right-padding the second axis with `padding_index` (as HF does)."""
    if a is None:
        return b
    if isinstance(a, (tuple, list)):
        return type(a)(_pad_concat(x, y, padding_index) for x, y in zip(a, b))
    if a.ndim < 2 or a.shape[1] == b.shape[1]:
        return np.concatenate([a, b], axis=0)
    width = max(a.shape[1], b.shape[1])
    out = np.full((a.shape[0] + b.shape[0], width) + a.shape[2:], padding_index, dtype=a.dtype)
    out[:a.shape[0], :a.shape[1]] = a
    out[a.shape[0]:, :b.shape[1]] = b
    return out


def _float32_copy(tensor):
    if tensor.dtype == ms.float32:
        return ms.Tensor(tensor.asnumpy())  # a copy: astype would hand back the same storage
    return tensor.astype(ms.float32)


class _MixedPrecision:
    """fp16/bf16 compute with float32 master weights (what AMP gives transformers' Trainer).

    The model's float parameters are held in the compute dtype while training; the optimizer updates the
    float32 masters and copies them back. `full_precision()` puts the float32 values back in the model
    (for saving, and when training ends). `masters` (name -> Parameter) persists across train() calls so
    that an optimizer built on them keeps its state.
    """

    def __init__(self, model, dtype, named_trainable, masters):
        self.dtype = dtype
        self.params = [p for _, p in model.parameters_and_names() if p.dtype in (ms.float32, ms.float16, ms.bfloat16)]
        self.fp32 = {}
        for name, param in model.parameters_and_names():
            if param.dtype not in (ms.float32, ms.float16, ms.bfloat16):
                continue
            if name in masters:
                masters[name].set_data(_float32_copy(param))
                self.fp32[id(param)] = masters[name]
            else:
                self.fp32[id(param)] = ms.Parameter(_float32_copy(param), name=f"master.{name}", requires_grad=False)
        for name, param in named_trainable:
            masters[name] = self.fp32[id(param)]

    def to_compute(self):
        for p in self.params:  # set_dtype casts in place (set_data would keep the parameter's old dtype)
            p.set_dtype(self.dtype)

    def full_precision(self):
        for p in self.params:
            p.set_dtype(ms.float32)
            p.set_data(_float32_copy(self.fp32[id(p)]))

    @staticmethod
    def copy_back(params, masters):
        for p, master in zip(params, masters):
            ops.assign(p, master.astype(p.dtype))


class Trainer:
    """transformers.Trainer for MindSpore models (see the module docstring and docs/differences.md)."""

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, model_init=None, compute_loss_func=None, compute_metrics=None,
                 callbacks=None, optimizers=(None, None), optimizer_cls_and_kwargs=None,
                 preprocess_logits_for_metrics=None, tokenizer=None):
        self.args = self._our_args(args)
        dist.ensure_initialized()
        set_seed(self.args.seed)
        if tokenizer is not None:
            warn_once("Trainer(tokenizer=...) is the transformers 4.x name; use processing_class=")
            processing_class = processing_class if processing_class is not None else tokenizer
        if optimizer_cls_and_kwargs is not None:
            raise NotImplementedError("optimizer_cls_and_kwargs (torch optimizer classes) is not supported; pass "
                                      "optimizers=(mindformers_hf.trainer.AdamW(...), scheduler) instead")
        self.model_init = model_init
        if model is None:
            if model_init is None:
                raise RuntimeError("`Trainer` requires either a `model` or `model_init` argument")
            model = self.call_model_init()
        elif model_init is not None:
            raise ValueError("`Trainer` requires either a `model` or `model_init` argument, but not both.")
        self.model = self.model_wrapped = model
        self._check_args()
        dist.broadcast_parameters([p for _, p in self.model.parameters_and_names()])  # every rank starts from rank 0's weights (DDP)

        inner = _unwrap(model)
        if hasattr(model, "accepts_loss_kwargs"):
            self.model_accepts_loss_kwargs = model.accepts_loss_kwargs
        else:
            self.model_accepts_loss_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD
                                                 for p in _forward_parameters(model).values())
        self.label_names = (self.args.label_names if self.args.label_names is not None
                            else [p for p in _forward_parameters(inner) if "label" in p])
        self.can_return_loss = "return_loss" in _forward_parameters(inner)
        # Causal-LM losses shift labels: position 0 is never a target, so it is not counted.
        self._loss_shifts_labels = type(inner).__name__.endswith("ForCausalLM")

        if data_collator is None:
            from ..data import DataCollatorWithPadding, default_data_collator

            data_collator = (DataCollatorWithPadding(processing_class)
                             if processing_class is not None and hasattr(processing_class, "pad")
                             else default_data_collator)
        self.data_collator = data_collator
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.processing_class = processing_class
        self.compute_loss_func, self.compute_metrics = compute_loss_func, compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._created_lr_scheduler = False
        self._created_optimizer = False
        self._masters = {}  # parameter name -> float32 master weight (fp16/bf16 training)
        self.scaler = None
        self._mixed = None
        self._compiled = None

        callbacks = [DefaultFlowCallback] + list(callbacks or [])
        self.callback_handler = CallbackHandler(callbacks, self.model, processing_class, self.optimizer,
                                                self.lr_scheduler)
        self.add_callback(PrinterCallback if self.args.disable_tqdm else ProgressCallback)
        if self.args.should_save:
            os.makedirs(self.args.output_dir, exist_ok=True)
        self.control = TrainerControl()
        self.state = TrainerState(stateful_callbacks=[
            cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)])
        self.is_in_train = False
        self.current_flos = 0
        self._signature_columns = None
        self._train_batch_size = self.args.train_batch_size
        self._num_non_embedding_params = None
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _our_args(args):
        if args is None:
            logger.info("No `TrainingArguments` passed, using `output_dir=tmp_trainer`.")
            return TrainingArguments(output_dir="tmp_trainer")
        if isinstance(args, TrainingArguments):
            return args
        # transformers' own TrainingArguments: same fields, rebuilt as ours (torch-free device properties)
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
        return TrainingArguments(**values)

    def _check_args(self):
        args = self.args
        unsupported = {
            "deepspeed": args.deepspeed, "fsdp": args.fsdp,
            "train_sampling_strategy": args.train_sampling_strategy not in ("random", "sequential")
            and args.train_sampling_strategy,
            "label_smoothing_factor": args.label_smoothing_factor, "neftune_noise_alpha": args.neftune_noise_alpha,
            "auto_find_batch_size": args.auto_find_batch_size, "batch_eval_metrics": args.batch_eval_metrics,
            "hub_strategy": args.push_to_hub and getattr(args.hub_strategy, "value", args.hub_strategy)
            not in ("every_save", "end") and args.hub_strategy,
        }
        for name, value in unsupported.items():
            if value:
                raise NotImplementedError(f"TrainingArguments.{name}={value!r} is not supported by mindformers_hf's "
                                          "Trainer")
        optim = getattr(args.optim, "value", args.optim)
        if optim not in _ADAMW_OPTIMS:
            raise NotImplementedError(f"optim={optim!r} is not supported: the Trainer implements AdamW "
                                      f"(torch semantics) for {_ADAMW_OPTIMS}")
        ignored = {"use_liger_kernel": args.use_liger_kernel, "dataloader_num_workers": args.dataloader_num_workers,
                   "report_to": args.report_to, "fp16_full_eval": args.fp16_full_eval,
                   "bf16_full_eval": args.bf16_full_eval}
        for name, value in ignored.items():
            if value:
                warn_once(f"TrainingArguments.{name}={value!r} is accepted for compatibility and ignored "
                          "(see docs/differences.md)")

    def _compute_dtype(self):
        # `mindformers-hf launch --mixed_precision fp16|bf16` sets accelerate's variable, which transformers'
        # Trainer obeys through its Accelerator even when fp16/bf16 are not set in TrainingArguments.
        launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        if self.args.fp16 or (launched == "fp16" and not self.args.bf16):
            return ms.float16
        if self.args.bf16 or launched == "bf16":
            if device_target() == "CPU":
                warn_once("bf16=True on the CPU backend: MindSpore's CPU kernels cannot compute in bfloat16, so "
                          "training runs in float32 (on Ascend it runs in bfloat16 with float32 master weights).")
                return ms.float32
            return ms.bfloat16
        return ms.float32

    def call_model_init(self, trial=None):
        params = len(inspect.signature(self.model_init).parameters)
        model = self.model_init() if params == 0 else self.model_init(trial)
        if model is None:
            raise RuntimeError("model_init should not return None.")
        return model

    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)

    def is_local_process_zero(self):
        return self.args.local_process_index == 0

    def is_world_process_zero(self):
        return self.args.process_index == 0

    @property
    def tokenizer(self):
        return self.processing_class

    # ------------------------------------------------------------------ data
    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            names = list(_forward_parameters(_unwrap(self.model)))
            self._signature_columns = list(dict.fromkeys(names + ["label", "label_ids"] + self.label_names))

    def _remove_unused_columns(self, dataset, description="training"):
        """As transformers: drop dataset columns the model's forward does not take (e.g. the raw `text`)."""
        if not self.args.remove_unused_columns or not hasattr(dataset, "column_names") \
                or not hasattr(dataset, "remove_columns"):
            return dataset
        self._set_signature_columns_if_needed()
        unused = [c for c in dataset.column_names if c not in self._signature_columns]
        if len(unused) == len(dataset.column_names):
            raise ValueError(f"No columns in the {description} dataset match the model's inputs "
                             f"({self._signature_columns}); the dataset has {dataset.column_names}.")
        return dataset.remove_columns(unused) if unused else dataset

    def _collate_without_unused(self, features):
        """For datasets without remove_columns (lists of dicts): drop unknown keys before collating."""
        if self.args.remove_unused_columns and features and isinstance(features[0], dict):
            self._set_signature_columns_if_needed()
            features = [{k: v for k, v in f.items() if k in self._signature_columns} for f in features]
        return self.data_collator(features)

    def _loader(self, dataset, batch_size, shuffle, description, sharded=False):
        if dataset is None:
            raise ValueError(f"Trainer: {description} requires a {description} dataset.")
        dataset = self._remove_unused_columns(dataset, description)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        shards = {"num_shards": self.args.world_size, "shard_index": self.args.process_index} if sharded else {}
        return DataLoader(dataset, batch_size, self._collate_without_unused, shuffle=shuffle, seed=seed,
                          drop_last=self.args.dataloader_drop_last, **shards)

    def get_train_dataloader(self):
        shuffle = self.args.train_sampling_strategy != "sequential"
        return self._loader(self.train_dataset, self._train_batch_size, shuffle, "training", sharded=True)

    def get_eval_dataloader(self, eval_dataset=None):
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        return self._loader(dataset, self.args.eval_batch_size, False, "evaluation")

    def get_test_dataloader(self, test_dataset):
        return self._loader(test_dataset, self.args.eval_batch_size, False, "test")

    def num_examples(self, dataloader):
        return len(dataloader.dataset)

    def _prepare_inputs(self, inputs):
        """A batch (numpy, torch, MindSpore or lists) as MindSpore tensors."""
        prepared = {}
        for key, value in dict(inputs).items():
            if tensor_io.kind_of(value) is not None or isinstance(value, (list, tuple)) and value \
                    and not isinstance(value[0], str):
                value = tensor_io.to_mindspore(value)
            prepared[key] = value
        return prepared

    def _num_items_in_batch(self, batches):
        """Label tokens over all micro-batches of one optimizer step (transformers' loss normaliser)."""
        if not batches or "labels" not in batches[0] or not (
                self.model_accepts_loss_kwargs or self.compute_loss_func is not None):
            return None
        total = 0
        for batch in batches:
            labels = tensor_io.to_numpy(batch["labels"])
            if "shift_labels" in batch:
                labels = tensor_io.to_numpy(batch["shift_labels"])
            elif self._loss_shifts_labels:
                labels = labels[..., 1:]
            total += int((labels != IGNORE_INDEX).sum())
        if self._tokens_averaged_across_ranks():
            total = dist.sum_scalar(total)  # every rank divides by the global count (HF's average_tokens_across_devices)
        return total

    def _tokens_averaged_across_ranks(self):
        return self.args.world_size > 1 and getattr(self.args, "average_tokens_across_devices", True) and (
            self.model_accepts_loss_kwargs or self.compute_loss_func is not None)

    def _count_tokens(self, inputs):
        ids = inputs.get("input_ids")
        if ids is None:
            return 0
        if self.args.include_num_input_tokens_seen == "non_padding" and inputs.get("attention_mask") is not None:
            return dist.sum_scalar(int(tensor_io.to_numpy(inputs["attention_mask"]).sum()))
        return int(np.prod(ids.shape)) * self.args.world_size

    def floating_point_ops(self, inputs):
        ids = inputs.get("input_ids")
        if ids is None or not hasattr(self.model, "num_parameters"):
            return 0
        if self._num_non_embedding_params is None:
            self._num_non_embedding_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * int(np.prod(ids.shape)) * self._num_non_embedding_params

    # ------------------------------------------------------------------ optimizer and schedule
    def get_decay_parameter_names(self, model):
        """Names that get weight decay: not biases, not norms (transformers' patterns), not in nn.LayerNorm."""
        import re

        patterns = [re.compile(p) for p in _NO_DECAY_PATTERNS]
        in_layernorm = set()
        for cell_name, cell in model.cells_and_names():
            if isinstance(cell, nn.LayerNorm):
                in_layernorm.update(f"{cell_name}.{n}" if cell_name else n for n, _ in cell.parameters_and_names())
        return [name for name, _ in model.parameters_and_names()
                if name not in in_layernorm and not any(p.search(name.lower()) for p in patterns)]

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
            self.optimizer = AdamW(groups, lr=self.args.learning_rate,
                                   betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon,
                                   names=decay_names + other_names)
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

    @runtime.serialized  # creating optimizer state copies and zero-fills tensors: MindSpore work like a step's
    def _setup_optimization(self, max_steps):
        """Precision, optimizer, schedule and the gradient function, in that order."""
        if self._created_lr_scheduler:  # a second train() builds a fresh schedule, as transformers does
            self.lr_scheduler, self._created_lr_scheduler = None, False
        named = self._trainable()
        dtype = self._compute_dtype()
        self._mixed = None
        if dtype != ms.float32:
            if self.optimizer is not None and not self._created_optimizer:
                raise NotImplementedError("fp16/bf16 training with an optimizer passed in `optimizers=` is not "
                                          "supported (the Trainer keeps float32 master weights itself)")
            self._mixed = _MixedPrecision(self.model, dtype, named, self._masters)
            self._mixed.to_compute()
        self.scaler = GradScaler() if dtype == ms.float16 else None
        self.create_optimizer()
        self.create_scheduler(max_steps)
        # Gradients are taken for the model parameters the optimizer updates (or whose masters it updates).
        by_id = {id(p): p for _, p in named}
        if self._mixed is None:
            self._grad_params = [p for p in self.optimizer.params]
            missing = [p.name for p in self._grad_params if id(p) not in by_id]
            if missing:
                raise ValueError(f"The optimizer holds parameters that are not trainable model parameters: {missing[:3]}")
        else:
            master_to_param = {id(self._masters[n]): p for n, p in named}
            self._grad_params = [master_to_param[id(m)] for m in self.optimizer.params]
        self._grad_fn = ms.value_and_grad(self._loss_for_grad, None, weights=self._grad_params)
        self._layer_compilation = layer_compilation(self.model, self.args.torch_compile)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))

    # ------------------------------------------------------------------ training
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments: {', '.join(kwargs)}")
        if trial is not None:
            raise NotImplementedError("hyperparameter search (trial=) is not supported")
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        args = self.args
        self.is_in_train = True
        if self.model_init is not None:
            set_seed(args.seed)
            self.model = self.model_wrapped = self.call_model_init()
            self.optimizer, self.lr_scheduler = None, None
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({args.output_dir})")
        if resume_from_checkpoint is not None:
            if not os.path.isdir(resume_from_checkpoint):
                raise ValueError(f"Can't find a valid checkpoint at {resume_from_checkpoint}")
            self._load_from_checkpoint(resume_from_checkpoint)
        try:
            return self._inner_training_loop(args, resume_from_checkpoint, ignore_keys_for_eval)
        finally:
            if self._mixed is not None:
                self._mixed.full_precision()
                self._mixed = None
            self.is_in_train = False

    def set_initial_training_values(self, args, dataloader):
        """(num_train_epochs, updates/epoch, num_examples, num_train_samples, total batch, batches/epoch, max_steps)
        exactly as transformers computes them."""
        max_steps = args.max_steps
        total_train_batch_size = self._train_batch_size * args.gradient_accumulation_steps
        len_dataloader = len(dataloader) if dataloader.sized else None
        if len_dataloader is not None:
            num_update_steps_per_epoch = max(len_dataloader // args.gradient_accumulation_steps
                                             + int(len_dataloader % args.gradient_accumulation_steps > 0), 1)
            if max_steps < 0:
                max_steps = math.ceil(args.num_train_epochs * num_update_steps_per_epoch)
        if len_dataloader:
            num_examples = self.num_examples(dataloader)
            if args.max_steps > 0:
                num_train_epochs = max_steps // num_update_steps_per_epoch + int(
                    max_steps % num_update_steps_per_epoch > 0)
                num_train_samples = max_steps * total_train_batch_size
            else:
                num_train_epochs = math.ceil(args.num_train_epochs)
                num_train_samples = num_examples * args.num_train_epochs
        elif args.max_steps > 0:
            num_train_epochs = 2 ** 62
            num_update_steps_per_epoch = max_steps
            num_examples = num_train_samples = total_train_batch_size * args.max_steps
        else:
            raise ValueError(f"args.max_steps must be set to a positive value if dataloader does not have a length, "
                             f"was {args.max_steps}")
        steps_in_epoch = len_dataloader if len_dataloader is not None else max_steps * args.gradient_accumulation_steps
        return (num_train_epochs, num_update_steps_per_epoch, num_examples, num_train_samples,
                total_train_batch_size, steps_in_epoch, max_steps)

    def _inner_training_loop(self, args, resume_from_checkpoint, ignore_keys_for_eval):
        train_dataloader = self.get_train_dataloader()
        (num_train_epochs, num_update_steps_per_epoch, num_examples, num_train_samples, total_train_batch_size,
         steps_in_epoch, max_steps) = self.set_initial_training_values(args, train_dataloader)

        self.state = TrainerState(stateful_callbacks=[
            cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)])
        self.state.train_batch_size = self._train_batch_size
        self.state.compute_steps(args, max_steps)
        epochs_trained, steps_trained_in_current_epoch = 0, 0
        state_path = os.path.join(resume_from_checkpoint or "", ckpt.TRAINER_STATE_NAME)
        if resume_from_checkpoint is not None and os.path.isfile(state_path):
            self.state = TrainerState.load_from_json(state_path)
            if self.state.best_model_checkpoint is not None and not os.path.isdir(self.state.best_model_checkpoint):
                logger.warning(f"The best checkpoint {self.state.best_model_checkpoint} recorded in the resumed state "
                               "does not exist anymore. Ignoring it for this run.")
                self.state.best_model_checkpoint = None
            if self.state.train_batch_size is not None:  # (older states lack it; HF's check would raise on None)
                compare_trainer_and_checkpoint_args(args, self.state)  # warns on changed batch size / step cadence
            self._load_callback_state()
            epochs_trained = int(self.state.global_step // num_update_steps_per_epoch)
            if not args.ignore_data_skip:
                steps_trained_in_current_epoch = (self.state.global_step % num_update_steps_per_epoch
                                                  * args.gradient_accumulation_steps)
        self.state.max_steps, self.state.num_train_epochs = max_steps, num_train_epochs
        self.state.is_local_process_zero = self.is_local_process_zero()
        self.state.is_world_process_zero = self.is_world_process_zero()

        if args.activation_checkpointing:  # (transformers 5: also set by gradient_checkpointing=True)
            kwargs = dict(args.activation_checkpointing_kwargs or {})
            _unwrap(self.model).activation_checkpointing_enable(
                activation_checkpointing_kwargs=kwargs, every_n_layers=kwargs.pop("every_n_layers", 1),
                offload=kwargs.pop("offload", False))
        self._setup_optimization(max_steps)
        if resume_from_checkpoint is not None:
            self._load_optimizer_and_scheduler(resume_from_checkpoint)
            self._load_rng_state(resume_from_checkpoint)
        self.callback_handler.train_dataloader = train_dataloader

        logger.info("***** Running training *****")
        logger.info(f"  Num examples = {num_examples:,}, Num Epochs = {num_train_epochs:,}, batch size = "
                    f"{self._train_batch_size} x {args.gradient_accumulation_steps} accumulation = "
                    f"{total_train_batch_size}, optimization steps = {max_steps:,}, trainable parameters = "
                    f"{sum(int(np.prod(p.shape)) for p in self._grad_params):,}")
        if resume_from_checkpoint is not None:
            logger.info(f"  Resuming from {resume_from_checkpoint}: epoch {epochs_trained}, global step "
                        f"{self.state.global_step}, skipping {steps_trained_in_current_epoch} batches")

        start_time = time.time()
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._initial_global_step = self.state.global_step
        self._tr_loss, self._total_loss_scalar = 0.0, 0.0
        self._globalstep_last_logged = self.state.global_step
        self._tokens_since_log, self._time_last_log = 0, time.time()
        self._grad_accum = None

        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if args.eval_on_start:
            self._evaluate(ignore_keys_for_eval)
        for epoch in range(epochs_trained, num_train_epochs):
            self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
            skip = steps_trained_in_current_epoch if (epoch == epochs_trained and resume_from_checkpoint) else 0
            self._run_epoch(train_dataloader, epoch, steps_in_epoch, num_update_steps_per_epoch, skip,
                            ignore_keys_for_eval, start_time)
            if self.control.should_training_stop:
                break
        return self._finalize_training(num_train_samples, start_time)

    def _run_epoch(self, dataloader, epoch, steps_in_epoch, num_update_steps_per_epoch, skip, ignore_keys_for_eval,
                   start_time):
        args = self.args
        ga = args.gradient_accumulation_steps
        dataloader.set_epoch(epoch)
        step, grad_norm, learning_rate = skip - 1, None, None
        batches = dataloader.iter_from(skip)
        remainder = steps_in_epoch % ga or ga
        for update_step in range(skip // ga, num_update_steps_per_epoch):
            num_batches = ga if update_step != num_update_steps_per_epoch - 1 else remainder
            batch_samples = [b for _, b in zip(range(num_batches), batches)]
            if not batch_samples:
                break
            num_items_in_batch = self._num_items_in_batch(batch_samples)
            self.current_gradient_accumulation_steps = len(batch_samples)
            for i, inputs in enumerate(batch_samples):
                step += 1
                do_sync_step = (step + 1) % ga == 0 or (step + 1) == steps_in_epoch or i == len(batch_samples) - 1
                if step % ga == 0:
                    self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
                tr_loss_step = self.training_step(self.model, inputs, num_items_in_batch)
                if args.logging_nan_inf_filter and not math.isfinite(tr_loss_step):
                    self._tr_loss += self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
                else:
                    self._tr_loss += tr_loss_step
                self.current_flos += float(self.floating_point_ops(inputs))
                tokens = self._count_tokens(inputs)
                self._tokens_since_log += tokens
                if args.include_num_input_tokens_seen != "no":
                    self.state.num_input_tokens_seen += tokens
                if do_sync_step:
                    grad_norm = self._optimizer_step()
                    learning_rate = self._get_learning_rate()
                    if not self._step_was_skipped:
                        self.lr_scheduler.step()
                    self.state.global_step += 1
                    self.state.epoch = epoch + (step + 1) / steps_in_epoch
                    self.control = self.callback_handler.on_step_end(args, self.state, self.control)
                    self._maybe_log_save_evaluate(grad_norm, ignore_keys_for_eval, start_time, learning_rate)
                else:
                    self.control = self.callback_handler.on_substep_end(args, self.state, self.control)
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break
        if step < 0:
            logger.warning(f"There seems not to be a single sample in your epoch_iterator, stopping training at step "
                           f"{self.state.global_step}!")
            self.control.should_training_stop = True
        self.control = self.callback_handler.on_epoch_end(args, self.state, self.control)
        self._maybe_log_save_evaluate(grad_norm, ignore_keys_for_eval, start_time, learning_rate)

    def _loss_for_grad(self):
        """The function MindSpore differentiates: compute_loss on the current micro-batch, scaled for
        gradient accumulation (when the model did not normalise by num_items_in_batch) and for fp16."""
        inputs, num_items_in_batch = self._step_inputs
        loss = self.compute_loss(self.model, inputs, num_items_in_batch=num_items_in_batch)
        if not self._loss_scaled_for_ga(num_items_in_batch):
            loss = loss / self.current_gradient_accumulation_steps
        elif num_items_in_batch is not None and self._tokens_averaged_across_ranks():
            loss = loss * self.args.world_size  # undone by the gradient mean: the sum over ranks / global count
        if self.scaler is not None:
            loss = loss * self.scaler.scale
        return loss

    def _loss_scaled_for_ga(self, num_items_in_batch):
        explicit = getattr(self, "loss_is_scaled_for_ga", None)
        if explicit is not None:
            return explicit
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or \
            self.compute_loss_func is not None

    @runtime.serialized  # forward and backward: one thread's step at a time
    def training_step(self, model, inputs, num_items_in_batch=None):
        """Forward and backward on one micro-batch; gradients accumulate until the optimizer step.
        Returns the (accumulation-scaled) loss as a Python float."""
        model.set_train(True)
        if not hasattr(self, "current_gradient_accumulation_steps"):
            self.current_gradient_accumulation_steps = 1
        self._step_inputs = (self._prepare_inputs(inputs), num_items_in_batch)
        with self._layer_compilation.step(self._step_inputs[0]):
            loss, grads = self._grad_fn()
        self._step_inputs = None
        self._grad_accum = list(grads) if self._grad_accum is None else [
            a + g for a, g in zip(self._grad_accum, grads)]
        loss = float(loss.asnumpy())
        return loss / self.scaler.scale if self.scaler is not None else loss

    def _optimizer_step(self):
        """Unscale, measure, clip, step. Returns the pre-clip global gradient norm (a float)."""
        grads, self._grad_accum = self._grad_accum, None
        with runtime.model_lock():  # (not around the callbacks: user code)
            grads = dist.all_reduce_mean(grads)
            if self._mixed is not None:
                inv = 1.0 / self.scaler.scale if self.scaler is not None else 1.0
                grads = [g.astype(ms.float32) * inv if inv != 1.0 else g.astype(ms.float32) for g in grads]
            grad_norm = global_norm(grads)
        # As torch's GradScaler: with fp16 an inf/nan gradient skips the step (and the schedule) and halves the
        # loss scale. Without loss scaling the step is taken whatever the gradients hold, as in transformers.
        self._step_was_skipped = self.scaler is not None and not math.isfinite(grad_norm)
        if self.scaler is not None:
            self.scaler.update(found_inf=self._step_was_skipped)
        self.control = self.callback_handler.on_pre_optimizer_step(self.args, self.state, self.control)
        if not self._step_was_skipped:
            with runtime.model_lock():
                if self.args.max_grad_norm is not None and self.args.max_grad_norm > 0:
                    grads = clip_by_global_norm(grads, self.args.max_grad_norm, grad_norm)
                self.optimizer.step(grads)
                if self._mixed is not None:
                    self._mixed.copy_back(self._grad_params, self.optimizer.params)
        self.control = self.callback_handler.on_optimizer_step(self.args, self.state, self.control)
        return grad_norm

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """As transformers: the model's own loss, or `compute_loss_func(outputs, labels, num_items_in_batch)`."""
        labels = inputs.pop("labels") if self.compute_loss_func is not None and "labels" in inputs else None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        else:
            if isinstance(outputs, dict) and "loss" not in outputs:
                raise ValueError("The model did not return a loss from the inputs, only the following keys: "
                                 f"{','.join(outputs.keys())}. For reference, the inputs it received are "
                                 f"{','.join(inputs.keys())}.")
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ logging, evaluation, saving cadence
    def _maybe_log_save_evaluate(self, grad_norm, ignore_keys_for_eval, start_time, learning_rate=None):
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            steps = self.state.global_step - self._globalstep_last_logged
            logs = {"loss": self._mean_over_ranks(self._tr_loss) / steps}
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm
            logs["learning_rate"] = learning_rate if learning_rate is not None else self._get_learning_rate()
            self._total_loss_scalar += logs["loss"] * steps
            self._tr_loss = 0.0
            self._globalstep_last_logged = self.state.global_step
            now = time.time()
            tokens_per_second = self._tokens_since_log / max(now - self._time_last_log, 1e-9)
            self._tokens_since_log, self._time_last_log = 0, now
            self.store_flos()
            self.log(logs, start_time, tokens_per_second=tokens_per_second)
        if self.control.should_evaluate:
            metrics = self._evaluate(ignore_keys_for_eval)
            is_new_best = self._determine_best_metric(metrics)
            if self.args.save_strategy == SaveStrategy.BEST:
                self.control.should_save = is_new_best
        if self.control.should_save:
            self._save_checkpoint()
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def log(self, logs, start_time=None, tokens_per_second=None):
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                session_tokens = self.state.num_input_tokens_seen - self._initial_num_input_tokens_seen
                logs.update(speed_metrics("train", start_time, num_tokens=session_tokens))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control.should_log = False
        self.control = self.callback_handler.call_event("on_log", self.args, self.state, self.control, logs=logs,
                                                        tokens_per_second=tokens_per_second)

    def store_flos(self):
        self.state.total_flos += self.current_flos
        self.current_flos = 0

    def _determine_best_metric(self, metrics):
        metric = self.args.metric_for_best_model
        if metric is None:
            return False
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        if key not in metrics:
            raise KeyError(f"The `metric_for_best_model` training argument is set to '{key}', which is not found in "
                           f"the evaluation metrics. The available evaluation metrics are: {list(metrics)}.")
        better = np.greater if self.args.greater_is_better else np.less
        if self.state.best_metric is None:
            self.state.best_metric = float("-inf") if self.args.greater_is_better else float("inf")
        if better(metrics[key], self.state.best_metric):
            self.state.best_metric = metrics[key]
            if self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST):
                self.state.best_global_step = self.state.global_step
            return True
        return False

    def _mean_over_ranks(self, value):
        return dist.sum_scalar(value) / self.args.world_size if self.args.world_size > 1 else value

    def _finalize_training(self, num_train_samples, start_time):
        self._total_loss_scalar += self._mean_over_ranks(self._tr_loss)
        steps = self.state.global_step - self._initial_global_step
        train_loss = self._total_loss_scalar / max(steps, 0.001)
        metrics = speed_metrics("train", start_time, num_samples=num_train_samples * steps / max(self.state.max_steps, 1),
                                num_steps=steps)
        self.store_flos()
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self.log(metrics)
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            logger.info(f"Loading best model from {self.state.best_model_checkpoint} (score: {self.state.best_metric}).")
            if self._mixed is not None:
                self._mixed.full_precision()
                self._mixed = None
            self._load_from_checkpoint(self.state.best_model_checkpoint)
        if (self.args.should_save and self.state.best_model_checkpoint is not None
                and self.args.save_total_limit == 1):
            for checkpoint in sort_checkpoints(self.args.output_dir, best_model_checkpoint=self.state.best_model_checkpoint):
                if not os.path.samefile(checkpoint, self.state.best_model_checkpoint):
                    shutil.rmtree(checkpoint, ignore_errors=True)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        return TrainOutput(self.state.global_step, train_loss, metrics)

    # ------------------------------------------------------------------ evaluation and prediction
    def _evaluate(self, ignore_keys_for_eval):
        return self.evaluate(ignore_keys=ignore_keys_for_eval)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        override = eval_dataset is not None
        eval_dataset = eval_dataset if override else self.eval_dataset
        if isinstance(eval_dataset, dict):
            metrics = {}
            for name, dataset in eval_dataset.items():
                metrics.update(self.evaluate(dataset if override else name, ignore_keys,
                                             f"{metric_key_prefix}_{name}"))
            return metrics
        dataloader = self.get_eval_dataloader(eval_dataset)
        start_time = time.time()
        output = self.evaluation_loop(dataloader, "Evaluation", True if self.compute_metrics is None else None,
                                      ignore_keys, metric_key_prefix)
        loss = output.metrics.get(f"{metric_key_prefix}_loss")
        if output.predictions is None and loss is not None:  # loss-only: run_clm's perplexity (docs/differences.md)
            output.metrics[f"{metric_key_prefix}_perplexity"] = _perplexity(loss)
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                                            num_steps=math.ceil(output.num_samples / self.args.eval_batch_size)))
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        dataloader = self.get_test_dataloader(test_dataset)
        start_time = time.time()
        output = self.evaluation_loop(dataloader, "Prediction", None, ignore_keys, metric_key_prefix)
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                                            num_steps=math.ceil(output.num_samples / self.args.eval_batch_size)))
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        args = self.args
        if prediction_loss_only is None:
            prediction_loss_only = args.prediction_loss_only
        logger.info(f"***** Running {description} *****")
        self.model.set_train(False)
        self.callback_handler.eval_dataloader = dataloader
        losses, preds, labels, inputs_seen = [], None, None, None
        observed = 0
        for inputs in dataloader:
            ids = inputs.get("input_ids")
            batch_size = int(ids.shape[0]) if ids is not None else args.eval_batch_size
            observed += batch_size
            loss, logits, batch_labels = self.prediction_step(self.model, inputs, prediction_loss_only, ignore_keys)
            if loss is not None:
                losses.append(np.repeat(np.asarray(loss, np.float32).reshape(1), batch_size))
            if "inputs" in (args.include_for_metrics or []) and ids is not None:
                inputs_seen = _pad_concat(inputs_seen, tensor_io.to_numpy(ids))
            if logits is not None:
                if self.preprocess_logits_for_metrics is not None:  # tensors in, as transformers hands torch ones
                    logits = self.preprocess_logits_for_metrics(logits, batch_labels)
                preds = _pad_concat(preds, _nested_numpy(logits))
            if batch_labels is not None:  # compute_metrics gets numpy, as in transformers
                labels = _pad_concat(labels, _nested_numpy(batch_labels))
            self.control = self.callback_handler.on_prediction_step(args, self.state, self.control)
        all_losses = np.concatenate(losses) if losses else None
        num_samples = len(dataloader.dataset) if has_length(dataloader.dataset) else observed
        metrics = {}
        if self.compute_metrics is not None and preds is not None and labels is not None:
            extra = {"losses": all_losses if "loss" in (args.include_for_metrics or []) else None,
                     "inputs": inputs_seen}
            metrics = self.compute_metrics(EvalPrediction(predictions=preds, label_ids=labels, **extra))
        metrics = denumpify_detensorize(dict(metrics))
        if all_losses is not None:
            finite = np.isfinite(all_losses)
            if args.logging_nan_inf_filter and finite.any():
                all_losses = all_losses[finite]
            metrics[f"{metric_key_prefix}_loss"] = float(all_losses.mean())
        for key in list(metrics):
            if not key.startswith(f"{metric_key_prefix}_"):
                metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        return EvalLoopOutput(predictions=preds, label_ids=labels, metrics=metrics, num_samples=num_samples)

    @runtime.serialized
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """(loss, logits, labels) for one batch as MindSpore tensors (transformers: torch tensors), the loss a
        0-d tensor; evaluation_loop hands them to preprocess_logits_for_metrics, then gathers them as numpy."""
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        return_loss = inputs.get("return_loss")
        loss_without_labels = not self.label_names and (self.can_return_loss if return_loss is None else return_loss)
        if ignore_keys is None:
            ignore_keys = getattr(getattr(self.model, "config", None), "keys_to_ignore_at_inference", None) or [
                "cache", "past_key_values"]
        labels = None
        if has_labels or loss_without_labels:
            labels = tuple(tensor_io.to_mindspore(inputs.get(name)) for name in self.label_names)
            labels = labels[0] if len(labels) == 1 else labels
        num_items = self._num_items_in_batch([inputs]) if has_labels or loss_without_labels else None
        inputs = self._prepare_inputs(inputs)
        if has_labels or loss_without_labels:
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items)
            loss = tensor_io.to_mindspore(loss, ms.float32).mean()
            logits = (tuple(v for k, v in outputs.items() if k not in list(ignore_keys) + ["loss"])
                      if isinstance(outputs, dict) else tuple(outputs[1:]))
        else:
            loss = None
            outputs = model(**inputs)
            logits = (tuple(v for k, v in outputs.items() if k not in ignore_keys)
                      if isinstance(outputs, dict) else tuple(outputs))
        if prediction_loss_only:
            return loss, None, None
        return loss, (logits[0] if len(logits) == 1 else logits), labels

    # ------------------------------------------------------------------ saving and resuming
    def save_model(self, output_dir=None, _internal_call=False):
        """Rank 0 writes (`args.should_save`); the other ranks hold the same weights and return at once. As in
        transformers' data-parallel path nothing here synchronises: `if trainer.is_world_process_zero():
        trainer.save_model()` must not wait for ranks that never call it. A rank that reads the folder next
        waits for rank 0 itself (transformers' scripts call `accelerator.wait_for_everyone()` there)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            if self._mixed is not None:  # save float32 weights, as transformers does under AMP
                self._mixed.full_precision()
                try:
                    self._save(output_dir)
                finally:
                    self._mixed.to_compute()
            else:
                self._save(output_dir)

    def _save(self, output_dir):
        os.makedirs(output_dir, exist_ok=True)
        logger.info(f"Saving model checkpoint to {output_dir}")
        self.model.save_pretrained(output_dir)  # a PEFT model writes its adapter files
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(output_dir)
        ckpt.write_json(os.path.join(output_dir, ckpt.TRAINING_ARGS_NAME), self.args.to_dict())

    def _save_checkpoint(self):
        self.store_flos()
        run_dir = self.args.output_dir
        output_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.state.best_global_step:
            best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            if self.state.best_global_step == self.state.global_step or os.path.exists(best_dir):
                self.state.best_model_checkpoint = best_dir
        if self.args.should_save:  # rank 0 writes; the others wait so that no rank runs ahead of the files
            with ckpt.atomic_folder(output_dir) as tmp:
                self.save_model(tmp, _internal_call=True)
                if not self.args.save_only_model:
                    ckpt.save_optimizer(self.optimizer, tmp)
                    ckpt.write_json(os.path.join(tmp, ckpt.SCHEDULER_NAME), self.lr_scheduler.state_dict())
                    if self.scaler is not None:
                        ckpt.write_json(os.path.join(tmp, ckpt.SCALER_NAME), self.scaler.state_dict())
                    ckpt.write_json(os.path.join(tmp, ckpt.RNG_STATE_NAME), ckpt.rng_state())
                for cb in [cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)]:
                    name = type(cb).__name__
                    if isinstance(self.state.stateful_callbacks.get(name), list):
                        self.state.stateful_callbacks[name].append(cb.state())
                    else:
                        self.state.stateful_callbacks[name] = cb.state()
                ckpt.save_trainer_state(self.state, os.path.join(tmp, ckpt.TRAINER_STATE_NAME))
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
            if self.args.push_to_hub and getattr(self.args.hub_strategy, "value", self.args.hub_strategy) == "every_save":
                self._push_from_checkpoint(output_dir)
        dist.barrier()

    # ------------------------------------------------------------------ hub
    def _hub_repo_id(self):
        return self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))

    def _push_folder(self, folder, commit_message, ignore_patterns=None, revision=None, token=None):
        from ..hub import push_folder_to_hub

        return push_folder_to_hub(folder, self._hub_repo_id(), commit_message=commit_message,
                                  token=token or self.args.hub_token, private=self.args.hub_private_repo,
                                  revision=revision or self.args.hub_revision, ignore_patterns=ignore_patterns)

    def _push_from_checkpoint(self, checkpoint_dir):
        """push_to_hub=True, hub_strategy "every_save": each checkpoint's model files (not its optimizer,
        schedule or RNG state) become the repo's head, as transformers pushes them (synchronously here)."""
        state_files = [ckpt.OPTIMIZER_NAME, ckpt.OPTIMIZER_META_NAME, ckpt.SCHEDULER_NAME, ckpt.SCALER_NAME,
                       ckpt.RNG_STATE_NAME, ckpt.TRAINER_STATE_NAME]
        self._push_folder(checkpoint_dir, f"Training in progress, step {self.state.global_step}",
                          ignore_patterns=state_files)

    def push_to_hub(self, commit_message="End of training", blocking=True, token=None, revision=None, **kwargs):
        """transformers' Trainer.push_to_hub: save the model into output_dir and commit that folder (without
        its checkpoint-* subfolders) to `hub_model_id` (default: the output_dir's name). Rank 0 pushes; as
        save_model, it waits for no other rank (rank 0 alone may call it)."""
        for key in kwargs:
            warn_once(f"Trainer.push_to_hub: keyword {key!r} is accepted for compatibility and ignored")
        if not blocking:
            warn_once("Trainer.push_to_hub(blocking=False): the push runs synchronously here")
        self.save_model(_internal_call=True)
        info = None
        if self.args.should_save:
            info = self._push_folder(self.args.output_dir, commit_message, token=token, revision=revision,
                                     ignore_patterns=[f"{PREFIX_CHECKPOINT_DIR}-*", f"{PREFIX_CHECKPOINT_DIR}-*/*",
                                                      "runs/*"])
        return info

    def save_state(self):
        if self.args.should_save:
            ckpt.save_trainer_state(self.state, os.path.join(self.args.output_dir, ckpt.TRAINER_STATE_NAME))

    def _load_from_checkpoint(self, checkpoint):
        """Model weights from a checkpoint folder: the full model, or a PEFT model's adapter."""
        adapter = os.path.join(checkpoint, "adapter_model.safetensors")
        if os.path.isfile(adapter) and hasattr(self.model, "load_adapter"):
            adapter_name = getattr(self.model, "active_adapter", "default")
            self.model.load_adapter(checkpoint, adapter_name, is_trainable=True)
        elif hasattr(self.model, "load_checkpoint_folder"):
            self.model.load_checkpoint_folder(checkpoint)
        else:
            raise ValueError(f"Can't load weights from {checkpoint}: the model has neither load_adapter nor "
                             "load_checkpoint_folder")

    def _load_optimizer_and_scheduler(self, checkpoint):
        if not os.path.isfile(os.path.join(checkpoint, ckpt.OPTIMIZER_NAME)):
            warn_once(f"{checkpoint} has no optimizer state (saved with save_only_model?): the optimizer and "
                      "schedule restart")
            return
        ckpt.load_optimizer(self.optimizer, checkpoint)
        self.lr_scheduler.load_state_dict(ckpt.read_json(os.path.join(checkpoint, ckpt.SCHEDULER_NAME)))
        scaler_path = os.path.join(checkpoint, ckpt.SCALER_NAME)
        if self.scaler is not None and os.path.isfile(scaler_path):
            self.scaler.load_state_dict(ckpt.read_json(scaler_path))

    def _load_rng_state(self, checkpoint):
        path = os.path.join(checkpoint, ckpt.RNG_STATE_NAME)
        if os.path.isfile(path):
            ckpt.set_rng_state(ckpt.read_json(path))

    def _load_callback_state(self):
        if not self.args.restore_callback_states_from_checkpoint:
            return
        for cb in self.callback_handler.callbacks + [self.control]:
            if not isinstance(cb, ExportableState):
                continue
            saved = self.state.stateful_callbacks.get(type(cb).__name__)
            if isinstance(saved, list):
                saved = saved[-1] if saved else None
            if saved:
                for key, value in saved.get("args", {}).items():
                    setattr(cb, key, value)
                for key, value in saved.get("attributes", {}).items():
                    setattr(cb, key, value)

    def log_metrics(self, split, metrics):
        logger.info(f"***** {split} metrics *****")
        width = max((len(k) for k in metrics), default=0)
        for key in sorted(metrics):
            logger.info(f"  {key: <{width}} = {metrics[key]}")

    def save_metrics(self, split, metrics, combined=True):
        ckpt.write_json(os.path.join(self.args.output_dir, f"{split}_results.json"), metrics)
        if combined:
            path = os.path.join(self.args.output_dir, "all_results.json")
            combined_metrics = ckpt.read_json(path) if os.path.isfile(path) else {}
            combined_metrics.update(metrics)
            ckpt.write_json(path, combined_metrics)
