"""One training step of the Trainer: forward and backward on a micro-batch, then the optimizer update.

`training_step(model, inputs, num_items_in_batch)` is transformers' override point: it takes its
micro-batch as an argument and hands it to the differentiated function (`_loss_for_grad(inputs,
num_items_in_batch)`, differentiated by `mindspore.value_and_grad` with respect to `_grad_params` only).
Gradients accumulate in `_grad_accum` until `_optimizer_step` averages them over ranks, unscales them (fp16),
measures and clips their norm and steps the optimizer, as transformers' inner loop does.

Reads from the Trainer: args, model, optimizer, scaler, _mixed (precision.MixedPrecision or None),
_grad_params, _layer_compilation (layer_compilation.py), callback_handler, state, control.
"""
import math

import mindspore as ms

from .. import runtime
from . import distributed as dist
from . import sharding
from .optimization import clip_by_global_norm, global_norm


class TrainingStepMixin:
    def _make_grad_fn(self):
        """value_and_grad of `_loss_for_grad(inputs, num_items_in_batch)` for the parameters being trained
        (grad_position None: the batch is an argument, not differentiated)."""
        return ms.value_and_grad(self._loss_for_grad, None, weights=self._grad_params)

    def _loss_for_grad(self, inputs, num_items_in_batch):
        """The function MindSpore differentiates: compute_loss on one micro-batch, scaled for gradient
        accumulation (when the model did not normalise by num_items_in_batch) and for fp16."""
        loss = self.compute_loss(self.model, inputs, num_items_in_batch=num_items_in_batch)
        if not self._loss_scaled_for_ga(num_items_in_batch):
            loss = loss / self.current_gradient_accumulation_steps
        elif num_items_in_batch is not None and self._tokens_averaged_across_ranks():
            loss = loss * dist.data_parallel_size()  # undone by the gradient mean: the sum over ranks / global count
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
        inputs = self._prepare_inputs(inputs)
        with self._layer_compilation.step(inputs):
            loss, grads = self._grad_fn(inputs, num_items_in_batch)
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
                grads = self._mixed.float32_grads(grads, self.scaler)
            grad_norm = self._grad_norm(grads)
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

    def _grad_norm(self, grads):
        """The whole model's gradient norm; under tensor parallelism summed over the ranks' slices."""
        tp_layout = sharding.layout(self)
        if tp_layout is None:
            return global_norm(grads)
        names = {id(p): n for n, p in self.model.parameters_and_names()}
        return sharding.sharded_global_norm(grads, [names[id(p)] for p in self._grad_params], tp_layout)

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
