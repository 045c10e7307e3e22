"""Data collators with transformers' names and behaviour, emitting numpy (default), MindSpore or torch.

`return_tensors` is "np" by default here (transformers defaults to "pt"): the Trainer turns whatever a
collator returns (numpy, MindSpore or torch) into MindSpore tensors, so numpy is the cheapest hand-off.
"ms" gives MindSpore tensors and "pt" torch tensors (torch is imported only then).
"""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ..tensor_io import to_numpy

IGNORE_INDEX = -100
_KINDS = ("np", "ms", "mindspore", "pt")


def _emit(batch, return_tensors):
    """numpy arrays -> the requested kind (non-array values pass through)."""
    if return_tensors not in _KINDS:
        raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'np', 'ms' or 'pt'")
    if return_tensors == "np":
        return batch
    if return_tensors in ("ms", "mindspore"):
        import mindspore as ms

        convert = ms.Tensor
    else:
        import torch

        convert = torch.from_numpy
    return {k: convert(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def _as_array(values):
    """A list of per-example values (lists, numpy, MindSpore or torch) as one numpy array."""
    if hasattr(values[0], "shape") and not isinstance(values[0], np.ndarray):
        values = [to_numpy(v) for v in values]
    if isinstance(values[0], np.ndarray):
        return np.stack(values)
    array = np.array(values)
    return array.astype(np.int64) if array.dtype.kind in "iu" else array


def default_data_collator(features, return_tensors="np"):
    """Stack features that all have the same keys and shapes; `label` / `label_ids` become `labels`."""
    if not isinstance(features[0], Mapping):
        features = [vars(f) for f in features]
    first = features[0]
    batch = {}
    if first.get("label") is not None:
        label = to_numpy(first["label"]) if hasattr(first["label"], "shape") else first["label"]
        is_int = isinstance(label, (int, np.integer)) or (isinstance(label, np.ndarray) and label.dtype.kind in "iu")
        batch["labels"] = _as_array([f["label"] for f in features]).astype(np.int64 if is_int else np.float32)
    elif first.get("label_ids") is not None:
        batch["labels"] = _as_array([f["label_ids"] for f in features])
    for key, value in first.items():
        if key not in ("label", "label_ids") and value is not None and not isinstance(value, str):
            batch[key] = _as_array([f[key] for f in features])
    return _emit(batch, return_tensors)


@dataclass
class DefaultDataCollator:
    return_tensors: str = "np"

    def __call__(self, features, return_tensors=None):
        return default_data_collator(features, return_tensors or self.return_tensors)


def _pad(tokenizer, features, padding=True, max_length=None, pad_to_multiple_of=None):
    """tokenizer.pad to numpy, without the 'fast tokenizer: use __call__' warning (as transformers does)."""
    warnings = getattr(tokenizer, "deprecation_warnings", None)
    previous = warnings.get("Asking-to-pad-a-fast-tokenizer", False) if warnings is not None else None
    if warnings is not None:
        warnings["Asking-to-pad-a-fast-tokenizer"] = True
    try:
        padded = tokenizer.pad(features, padding=padding, max_length=max_length,
                               pad_to_multiple_of=pad_to_multiple_of, return_tensors="np")
    finally:
        if warnings is not None:
            warnings["Asking-to-pad-a-fast-tokenizer"] = previous
    return dict(padded)


@dataclass
class DataCollatorWithPadding:
    """Pad `input_ids` / `attention_mask` (and any other tokenizer keys) to the longest in the batch."""

    tokenizer: Any
    padding: Union[bool, str] = True
    max_length: Optional[int] = None
    pad_to_multiple_of: Optional[int] = None
    return_tensors: str = "np"

    def __call__(self, features):
        batch = _pad(self.tokenizer, features, self.padding, self.max_length, self.pad_to_multiple_of)
        for name in ("label", "label_ids"):
            if name in batch:
                batch["labels"] = batch.pop(name)
        return _emit(batch, self.return_tensors)


def _pad_sequences(examples, tokenizer, pad_to_multiple_of=None):
    """Token-id lists -> [B, T] int64, padded on the tokenizer's padding side with its pad token."""
    examples = [np.asarray(to_numpy(e) if hasattr(e, "shape") else e, dtype=np.int64) for e in examples]
    length = max(len(e) for e in examples)
    if pad_to_multiple_of and length % pad_to_multiple_of:
        length = (length // pad_to_multiple_of + 1) * pad_to_multiple_of
    if all(len(e) == length for e in examples):
        return np.stack(examples)
    if tokenizer.pad_token is None:
        raise ValueError("You are attempting to pad samples but the tokenizer you are using "
                         f"({type(tokenizer).__name__}) does not have a pad token.")
    out = np.full((len(examples), length), tokenizer.pad_token_id, dtype=np.int64)
    for row, example in enumerate(examples):
        if tokenizer.padding_side == "left":
            out[row, length - len(example):] = example
        else:
            out[row, :len(example)] = example
    return out


@dataclass
class DataCollatorForLanguageModeling:
    """Causal-LM batches (`mlm=False`): pad, and copy `input_ids` to `labels` with padding set to -100.

    Masked language modelling (`mlm=True`, transformers' default) is not supported: there is no masked-LM
    model here. Pass `mlm=False`.
    """

    tokenizer: Any
    mlm: bool = True
    whole_word_mask: bool = False
    mlm_probability: Optional[float] = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: Optional[int] = None
    return_tensors: str = "np"
    seed: Optional[int] = None

    def __post_init__(self):
        if self.mlm:
            raise NotImplementedError(
                "DataCollatorForLanguageModeling(mlm=True): masked language modeling is not supported by "
                "mindformers_hf (no masked-LM models). Pass mlm=False for causal language modeling."
            )
        if self.whole_word_mask:
            raise ValueError("Whole word masking can only be used with mlm=True.")

    def __call__(self, examples, return_tensors=None):
        if isinstance(examples[0], Mapping):
            batch = _pad(self.tokenizer, examples, pad_to_multiple_of=self.pad_to_multiple_of)
        else:
            batch = {"input_ids": _pad_sequences(examples, self.tokenizer, self.pad_to_multiple_of)}
        batch.pop("special_tokens_mask", None)
        batch.pop("offset_mapping", None)
        labels = np.array(batch["input_ids"], dtype=np.int64, copy=True)
        if self.tokenizer.pad_token_id is not None:
            labels[labels == self.tokenizer.pad_token_id] = IGNORE_INDEX
        batch["labels"] = labels
        return _emit(batch, return_tensors or self.return_tensors)


# ---------------------------------------------------------------------- transformers' own collators, any kind
# These are transformers' classes, run with return_tensors="np" (their torch-free path), and the numpy batch
# is then emitted as the kind asked for: one implementation of padding and label rules, HF's.
def _hf_collators():
    from transformers.data import data_collator

    return data_collator


def _kind(requested, default):
    kind = requested or default
    if kind not in _KINDS:
        raise ValueError(f"return_tensors={kind!r} is not supported; use 'np', 'ms' or 'pt'")
    return kind


@dataclass
class DataCollatorForSeq2Seq(_hf_collators().DataCollatorForSeq2Seq):
    """transformers.DataCollatorForSeq2Seq: pads inputs with the tokenizer and `labels` with -100."""

    return_tensors: str = "np"

    def __call__(self, features, return_tensors=None):
        kind = _kind(return_tensors, self.return_tensors)
        return _emit(dict(super().__call__(features, return_tensors="np")), kind)


@dataclass
class DataCollatorForTokenClassification(_hf_collators().DataCollatorForTokenClassification):
    """transformers.DataCollatorForTokenClassification: pads inputs and per-token `labels` (-100)."""

    return_tensors: str = "np"

    def __call__(self, features, return_tensors=None):
        kind = _kind(return_tensors, self.return_tensors)
        return _emit(dict(self.numpy_call(features)), kind)


@dataclass
class DataCollatorForMultipleChoice(_hf_collators().DataCollatorForMultipleChoice):
    """transformers.DataCollatorForMultipleChoice: every choice of every example padded alike, [B, C, T]."""

    return_tensors: str = "np"

    def __call__(self, features, return_tensors=None):
        kind = _kind(return_tensors, self.return_tensors)
        return _emit(self.numpy_call(features), kind)

    def numpy_call(self, examples):
        # transformers' torch_call with numpy (transformers has no numpy path for this collator)
        label_name = "label" if "label" in examples[0] else "labels"
        labels = [example[label_name] for example in examples]
        batch_size, num_choices = len(examples), len(examples[0]["input_ids"])
        flat = [{k: v[i] for k, v in example.items() if k != label_name}
                for example in examples for i in range(num_choices)]
        batch = _pad(self.tokenizer, flat, self.padding, self.max_length, self.pad_to_multiple_of)
        batch = {k: np.asarray(v).reshape(batch_size, num_choices, -1) for k, v in batch.items()}
        batch["labels"] = np.asarray(labels, dtype=np.int64)
        return batch


class DataCollatorWithFlattening(_hf_collators().DataCollatorWithFlattening):
    """transformers.DataCollatorWithFlattening: the batch as one row, `position_ids` restarting per example.
    The models separate the examples when transformers does (masking_utils.packed_sequence_ids)."""

    def __init__(self, *args, return_tensors="np", **kwargs):
        super().__init__(*args, return_tensors=return_tensors, **kwargs)

    def __call__(self, features, return_tensors=None, separator_id=None):
        kind = _kind(return_tensors, self.return_tensors)
        return _emit(super().__call__(features, return_tensors="np", separator_id=separator_id), kind)
