"""Batches for the Trainer: which dataset columns the model takes, the train / eval / test loaders
(data_loader.DataLoader, sharded over data-parallel ranks for training), batches as MindSpore tensors, and
the counts transformers derives from them (label tokens per optimizer step, input tokens, FLOPs).

Reads from the Trainer: args, model, data_collator, train_dataset, eval_dataset, label_names,
model_accepts_loss_kwargs, compute_loss_func, _loss_shifts_labels, _train_batch_size.
"""
import inspect
from collections.abc import Mapping

import numpy as np

from .. import tensor_io
from ..loss_utils import IGNORE_INDEX
from . import distributed as dist
from ..utils import warn_once
from .data_loader import DataLoader, has_length


def unwrap(model):
    """The transformer under a PEFT wrapper (for label names and the loss type)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def forward_parameters(model):
    return inspect.signature(model.construct).parameters


class BatchesMixin:
    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            names = list(forward_parameters(unwrap(self.model)))
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

    def _lengths(self, dataset):
        """Example lengths for train_sampling_strategy="group_by_length" (None otherwise), where transformers
        takes them: the `length_column_name` column of a `datasets.Dataset`, else the length of each
        example's first model input (`processing_class.model_input_names[0]`, default input_ids)."""
        if self.args.train_sampling_strategy != "group_by_length":
            return None
        if not has_length(dataset) or not hasattr(dataset, "__getitem__"):
            warn_once("`train_sampling_strategy='group_by_length'` is ignored because the dataset does not implement "
                      "`__len__` (e.g. an `IterableDataset`). Examples will be consumed in the dataset's own order.")
            return None
        column = self.args.length_column_name
        if column in (getattr(dataset, "column_names", None) or []):
            return [int(n) for n in dataset[column]]
        names = getattr(self.processing_class, "model_input_names", None) or ["input_ids"]
        if len(dataset) and (not isinstance(dataset[0], Mapping) or names[0] not in dataset[0]):
            raise ValueError("Can only automatically infer lengths for datasets whose items are dictionaries with an "
                             f"'{names[0]}' key.")
        return [len(feature[names[0]]) for feature in dataset]

    def _loader(self, dataset, batch_size, shuffle, description, sharded=False, group_batch_size=None):
        if dataset is None:
            raise ValueError(f"Trainer: {description} requires a {description} dataset.")
        dataset = self._remove_unused_columns(dataset, description)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # one shard per data-parallel replica (the ranks of a tensor-parallel group read the same one)
        shards = {"num_shards": dist.data_parallel_size(), "shard_index": dist.data_parallel_rank()} if sharded else {}
        return DataLoader(dataset, batch_size, self._collate_without_unused, shuffle=shuffle, seed=seed,
                          drop_last=self.args.dataloader_drop_last, group_lengths=self._lengths(dataset),
                          group_batch_size=group_batch_size, **shards)

    def get_train_dataloader(self):
        shuffle = self.args.train_sampling_strategy != "sequential"
        # transformers groups mega-batches of one optimizer step's examples on each rank
        return self._loader(self.train_dataset, self._train_batch_size, shuffle, "training", sharded=True,
                            group_batch_size=self._train_batch_size * self.args.gradient_accumulation_steps)

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
        return dist.data_parallel_size() > 1 and getattr(self.args, "average_tokens_across_devices", True) and (
            self.model_accepts_loss_kwargs or self.compute_loss_func is not None)

    def _count_tokens(self, inputs):
        ids = inputs.get("input_ids")
        if ids is None:
            return 0
        if self.args.include_num_input_tokens_seen == "non_padding" and inputs.get("attention_mask") is not None:
            return dist.sum_scalar(int(tensor_io.to_numpy(inputs["attention_mask"]).sum()))
        return int(np.prod(ids.shape)) * dist.data_parallel_size()

    def floating_point_ops(self, inputs):
        ids = inputs.get("input_ids")
        if ids is None or not hasattr(self.model, "num_parameters"):
            return 0
        if self._num_non_embedding_params is None:
            self._num_non_embedding_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * int(np.prod(ids.shape)) * self._num_non_embedding_params
