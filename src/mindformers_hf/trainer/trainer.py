"""Trainer: transformers' training loop on MindSpore models.

The loop follows transformers/trainer.py step for step: the same TrainingArguments, callbacks and
TrainerState, the same gradient-accumulation loss normalisation (`num_items_in_batch`), clipping, logging,
evaluation and checkpoint cadence, and the same `trainer_state.json`. What differs is underneath:
- gradients come from `mindspore.value_and_grad` over `compute_loss` (PyNative: the model runs as written);
  only parameters with `requires_grad=True` are trained;
- the optimizers are torch's / transformers' update rules (AdamW, SGD, Adafactor, ...: optimization.py,
  optimizers.py), the schedules are transformers';
- batches come from our DataLoader (numpy shuffling; data_loader.py);
- checkpoints hold safetensors and JSON, never pickles (checkpointing.py);
- data parallel under `mindformers-hf launch` / msrun (distributed.py): each rank trains on its slice of every
  global batch, gradients are averaged with one AllReduce, rank 0 alone logs and writes;
- fp16 is mixed precision with float32 master weights and dynamic loss scaling; bf16 on the CPU backend
  trains in float32 (its kernels cannot compute in bf16), with a one-time warning.

This file holds the loop (setup, epochs, logging cadence, the end of training). Its parts, read in this
order: step.py (one micro-batch's forward/backward, taken as an argument, and the optimizer update),
precision.py (compute dtype, float32 masters, loss scaling), optimizers.py (the optimizer `optim` names,
its parameter groups, the schedule), batches.py (loaders and batch counts),
evaluation.py (evaluate / predict), saving.py (checkpoints and resuming), hub_push.py (push_to_hub).
They are mixins of `Trainer`, not separate objects, so that a subclass overrides `training_step`,
`compute_loss`, `prediction_step` or `evaluate` exactly as it does on transformers' Trainer.
"""
import dataclasses
import inspect
import math
import os
import shutil
import time

import numpy as np
import mindspore as ms
from transformers.trainer_utils import (
    SaveStrategy,
    TrainOutput,
    compare_trainer_and_checkpoint_args,
    get_last_checkpoint,
    sort_checkpoints,
    speed_metrics,
)
from transformers.utils import logging as hf_logging

from .. import runtime
from ..utils import logger, set_seed, warn_once
from . import checkpointing as ckpt
from . import distributed as dist
from .batches import BatchesMixin, forward_parameters, unwrap as _unwrap
from .callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    ExportableState,
    PrinterCallback,
    ProgressCallback,
    TrainerControl,
    TrainerState,
)
from .evaluation import EvaluationMixin
from .hub_push import HubPushMixin
from .optimizers import OptimizerSetupMixin, check_optim
from .precision import MixedPrecision, compute_dtype, loss_scaler
from .saving import SavingMixin
from .step import TrainingStepMixin
from .layer_compilation import layer_compilation
from .tensorboard import TensorBoardCallback
from .training_args import TrainingArguments



class Trainer(TrainingStepMixin, EvaluationMixin, SavingMixin, HubPushMixin, BatchesMixin,
              OptimizerSetupMixin):
    """transformers.Trainer for MindSpore models (see the module docstring and docs/differences.md)."""

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, model_init=None, compute_loss_func=None, compute_metrics=None,
                 callbacks=None, optimizers=(None, None), optimizer_cls_and_kwargs=None,
                 preprocess_logits_for_metrics=None, tokenizer=None):
        self.args = self._our_args(args)
        # As transformers: log_level (log_level_replica on other ranks) sets the library verbosity, which our
        # log lines follow (utils.logger); "passive" keeps the current one.
        hf_logging.set_verbosity(self.args.get_process_log_level())
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
                                                 for p in forward_parameters(model).values())
        self.label_names = (self.args.label_names if self.args.label_names is not None
                            else [p for p in forward_parameters(inner) if "label" in p])
        self.can_return_loss = "return_loss" in forward_parameters(inner)
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
        self._layer_compilation = None

        reporting = [TensorBoardCallback] if "tensorboard" in (self.args.report_to or []) else []
        callbacks = [DefaultFlowCallback] + reporting + list(callbacks or [])  # (transformers' order)
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
        if getattr(self.model, "config", None) is not None:  # as transformers (TrainingArguments.use_cache)
            self.model.config.use_cache = self.args.use_cache

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
            "fsdp": args.fsdp,  # (deepspeed: TrainingArguments refuses every ZeRO stage but 1, which runs natively)
            "train_sampling_strategy": args.train_sampling_strategy not in ("random", "sequential", "group_by_length")
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
        check_optim(args)
        ignored = {"use_liger_kernel": args.use_liger_kernel, "dataloader_num_workers": args.dataloader_num_workers,
                   "report_to": [r for r in args.report_to or [] if r != "tensorboard"],  # (tensorboard.py)
                   "fp16_full_eval": args.fp16_full_eval, "bf16_full_eval": args.bf16_full_eval}
        for name, value in ignored.items():
            if value:
                warn_once(f"TrainingArguments.{name}={value!r} is accepted for compatibility and ignored "
                          "(see docs/differences.md)")

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

    @runtime.serialized  # creating optimizer state copies and zero-fills tensors: MindSpore work like a step's
    def _setup_optimization(self, max_steps):
        """Precision, optimizer, schedule and the gradient function, in that order."""
        if self._created_lr_scheduler:  # a second train() builds a fresh schedule, as transformers does
            self.lr_scheduler, self._created_lr_scheduler = None, False
        named = self._trainable()
        dtype = compute_dtype(self.args)
        self._mixed = None
        if dtype != ms.float32:
            if self.optimizer is not None and not self._created_optimizer:
                raise NotImplementedError("fp16/bf16 training with an optimizer passed in `optimizers=` is not "
                                          "supported (the Trainer keeps float32 master weights itself)")
            self._mixed = MixedPrecision(self.model, dtype, named, self._masters)
            self._mixed.to_compute()
        self.scaler = loss_scaler(dtype)
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
        self._grad_fn = self._make_grad_fn()
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
        n = dist.data_parallel_size()
        return dist.sum_scalar(value) / n if n > 1 else value

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

