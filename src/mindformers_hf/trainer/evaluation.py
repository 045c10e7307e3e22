"""Evaluation and prediction for the Trainer: transformers' evaluate / predict / evaluation_loop /
prediction_step, with batches on MindSpore and the gathered predictions, labels and losses as numpy.

Reads from the Trainer: args, model, label_names, can_return_loss, compute_metrics,
preprocess_logits_for_metrics, callback_handler, state, control; calls its get_eval_dataloader /
get_test_dataloader, _prepare_inputs, _num_items_in_batch, compute_loss and log.
"""
import math
import time

import numpy as np
import mindspore as ms
from transformers.trainer_utils import (
    EvalLoopOutput,
    EvalPrediction,
    PredictionOutput,
    denumpify_detensorize,
    speed_metrics,
)

from .. import runtime, tensor_io
from ..loss_utils import IGNORE_INDEX
from ..utils import logger
from .data_loader import has_length


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


class EvaluationMixin:
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
