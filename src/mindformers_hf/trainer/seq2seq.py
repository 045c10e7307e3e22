"""Seq2SeqTrainer and Seq2SeqTrainingArguments: transformers' sequence-to-sequence trainer (Whisper's fine-tuning
recipe) on our Trainer.

The arguments are transformers' Seq2SeqTrainingArguments fields (`predict_with_generate`,
`generation_max_length`, `generation_num_beams`, `generation_config`, `sortish_sampler`) on our torch-free
TrainingArguments. With `predict_with_generate`, evaluation and prediction decode each batch with
`model.generate` and hand the generated tokens (padded to the generation config's max_length with the pad
token, as transformers does, labels too) to `compute_metrics`; the loss is the model's on the labels.
"""
import copy
import os
from dataclasses import dataclass

import numpy as np
import transformers

from .. import runtime, tensor_io
from ..utils import warn_once
from .trainer import Trainer
from .training_args import TrainingArguments


@dataclass
class Seq2SeqTrainingArguments(TrainingArguments, transformers.Seq2SeqTrainingArguments):
    def __post_init__(self):
        super().__post_init__()
        if self.sortish_sampler:
            warn_once("Seq2SeqTrainingArguments: sortish_sampler is accepted for compatibility and ignored "
                      "(transformers 5 ignores it too)")


class Seq2SeqTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.args, "generation_config", None) is not None:
            self.model.generation_config = self.load_generation_config(self.args.generation_config)

    @staticmethod
    def load_generation_config(gen_config_arg):
        """A GenerationConfig, a folder holding generation_config.json, or that file's path (as transformers)."""
        if isinstance(gen_config_arg, transformers.GenerationConfig):
            gen_config = copy.deepcopy(gen_config_arg)
        else:
            folder, name = str(gen_config_arg), None
            if os.path.isfile(folder):
                folder, name = os.path.dirname(folder), os.path.basename(folder)
            gen_config = transformers.GenerationConfig.from_pretrained(folder, name)
        try:
            gen_config.validate(strict=True)
        except ValueError as exc:
            raise ValueError(str(exc) + "\n\nFix these issues to train your model.")
        return gen_config

    def _generation_kwargs(self, gen_kwargs):
        gen_kwargs = dict(gen_kwargs)
        if (gen_kwargs.get("max_length") is None and gen_kwargs.get("max_new_tokens") is None
                and self.args.generation_max_length is not None):
            gen_kwargs["max_length"] = self.args.generation_max_length
        if gen_kwargs.get("num_beams") is None and self.args.generation_num_beams is not None:
            gen_kwargs["num_beams"] = self.args.generation_num_beams
        return gen_kwargs

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test", **gen_kwargs):
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        return self._generate_step(model, inputs, gen_kwargs)

    @runtime.serialized
    def _generate_step(self, model, inputs, gen_kwargs):
        has_labels = "labels" in inputs
        inputs = self._prepare_inputs(inputs)
        if not gen_kwargs:
            gen_kwargs = dict(getattr(self, "_gen_kwargs", {}))
        gen_kwargs = {k: v for k, v in gen_kwargs.items() if not (k in ("num_beams", "max_length") and v is None)}
        gen_kwargs.pop("synced_gpus", None)
        generation_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if ("decoder_input_ids" in inputs and has_labels
                and tuple(inputs["labels"].shape) == tuple(inputs["decoder_input_ids"].shape)):
            generation_inputs = {k: v for k, v in generation_inputs.items()
                                 if k not in ("decoder_input_ids", "decoder_attention_mask")}
        model.set_train(False)
        generated = np.asarray(tensor_io.to_numpy(self.model.generate(**generation_inputs, **gen_kwargs)))
        gen_config = self.model.generation_config
        if getattr(gen_config, "_from_model_config", False):
            gen_config._from_model_config = False
        gen_config.update(**gen_config._get_default_generation_params(), defaults_only=True)
        generated = self._pad_to_generation_length(generated, gen_config)
        loss = None
        if has_labels:
            outputs = model(**inputs)
            loss = tensor_io.to_numpy(outputs["loss"] if isinstance(outputs, dict) else outputs[0])
            loss = np.float32(np.asarray(loss).mean())
        if self.args.prediction_loss_only:
            return loss, None, None
        labels = None
        if has_labels:
            labels = self._pad_to_generation_length(np.asarray(tensor_io.to_numpy(inputs["labels"])), gen_config)
        return loss, generated, labels

    def _pad_to_generation_length(self, tokens, gen_config):
        """transformers pads generated tokens and labels to max_length (or max_new_tokens + 1) with the pad token."""
        if tokens.shape[-1] < gen_config.max_length:
            return self._pad_tensors_to_max_len(tokens, gen_config.max_length)
        if gen_config.max_new_tokens is not None and tokens.shape[-1] < gen_config.max_new_tokens + 1:
            return self._pad_tensors_to_max_len(tokens, gen_config.max_new_tokens + 1)
        return tokens

    def _pad_tensors_to_max_len(self, tokens, max_length):
        pad = getattr(self.processing_class, "pad_token_id", None) if self.processing_class is not None else None
        if self.processing_class is not None and hasattr(self.processing_class, "pad_token_id"):
            pad = pad if pad is not None else self.processing_class.eos_token_id
        elif getattr(self.model.config, "pad_token_id", None) is not None:
            pad = self.model.config.pad_token_id
        else:
            raise ValueError("Pad_token_id must be set in the configuration of the model, in order to pad tensors")
        padded = np.full((tokens.shape[0], max_length), pad, tokens.dtype)
        padded[:, :tokens.shape[-1]] = tokens
        return padded
