"""train_sampling_strategy="group_by_length" (4.x: group_by_length=True) against transformers.

The grouping is transformers' get_length_grouped_indices: given the same random permutation, our
length_grouped_indices returns the same order, index for index. The permutation itself is numpy's
(default_rng([seed, epoch])) where transformers draws torch.randperm from torch's global generator, so the
two Trainers' orders differ; both are checked for the grouping property instead (every index once, each
mega-batch sorted by decreasing length, the longest example first), and ours against the algorithm.
"""
import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.trainer import Trainer, TrainingArguments
from mindformers_hf.trainer.data_loader import length_grouped_indices
from tests.conftest import make_hf_checkpoint


@pytest.mark.parametrize("n, batch_size, seed", [(7, 2, 0), (40, 4, 1), (300, 3, 2), (1000, 8, 3), (33, 64, 4)])
def test_grouping_equals_transformers_for_the_same_permutation(n, batch_size, seed):
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = np.random.default_rng(seed).integers(1, 20, n).tolist()  # many ties: the sort must be stable
    want = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    assert length_grouped_indices(lengths, batch_size, permutation) == want


N, BATCH, ACCUM = 40, 2, 2


def _dataset():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 30, N)
    # the first token names the example, so the order the model sees can be read back from the batches
    return [{"input_ids": [i + 3] + [5] * (int(n) - 1), "labels": [i + 3] + [5] * (int(n) - 1)}
            for i, n in enumerate(lengths)], lengths.tolist()


def _collate(seen):
    def collate(features):
        width = max(len(f["input_ids"]) for f in features)
        seen.extend(f["input_ids"][0] - 3 for f in features)
        return {"input_ids": np.array([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
                "attention_mask": np.array([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                            for f in features]),
                "labels": np.array([f["labels"] + [-100] * (width - len(f["labels"])) for f in features])}
    return collate


def _assert_grouped(order, lengths):
    assert sorted(order) == list(range(N))
    assert lengths[order[0]] == max(lengths)
    mega = min(N // (BATCH * ACCUM * 4), 50) * BATCH * ACCUM  # transformers' mega-batch size
    for start in range(0, N, mega):
        block = [lengths[i] for i in order[start:start + mega]][1:]  # (the first may be the swapped longest)
        assert block == sorted(block, reverse=True)


ARGS = dict(per_device_train_batch_size=BATCH, gradient_accumulation_steps=ACCUM, report_to="none",
            disable_tqdm=True, save_strategy="no", seed=11)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("gbl"), seed=2)


def test_trainers_group_batches_by_length(folder, tmp_path):
    import torch
    import transformers

    data, lengths = _dataset()
    hf_seen = []
    hf = transformers.Trainer(
        model=transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), train_dataset=data,
        data_collator=_collate(hf_seen), args=transformers.TrainingArguments(
            str(tmp_path / "hf"), use_cpu=True, train_sampling_strategy="group_by_length", **ARGS))
    list(hf.get_train_dataloader())
    _assert_grouped(hf_seen, lengths)

    seen = []
    ours = Trainer(model=AutoModelForCausalLM.from_pretrained(folder), train_dataset=data, data_collator=_collate(seen),
                   args=TrainingArguments(str(tmp_path / "ours"), group_by_length=True, max_steps=2, **ARGS))
    assert ours.args.train_sampling_strategy == "group_by_length"
    list(ours.get_train_dataloader())
    _assert_grouped(seen, lengths)
    permutation = np.random.default_rng([11, 0]).permutation(N)
    assert seen == length_grouped_indices(lengths, BATCH * ACCUM, permutation)
    epoch_order, seen[:] = list(seen), []
    ours.train()  # the training loop draws its batches in that order
    assert seen == epoch_order[:2 * BATCH * ACCUM]


def test_evaluation_batches_are_grouped_as_transformers_groups_them(folder, tmp_path):
    """transformers also groups eval batches (with a generator seeded by data_seed / seed): evaluate() and
    predict() see examples grouped by length, and predictions come back in that order."""
    data, lengths = _dataset()
    seen = []
    ours = Trainer(model=AutoModelForCausalLM.from_pretrained(folder), eval_dataset=data, data_collator=_collate(seen),
                   args=TrainingArguments(str(tmp_path), train_sampling_strategy="group_by_length",
                                          per_device_eval_batch_size=4, **ARGS))
    list(ours.get_eval_dataloader())
    assert seen == length_grouped_indices(lengths, 4, np.random.default_rng([11, 0]).permutation(N))
    seen[:] = []
    list(ours.get_eval_dataloader())
    assert seen == length_grouped_indices(lengths, 4, np.random.default_rng([11, 0]).permutation(N))  # fixed


def test_lengths_from_the_length_column_and_errors(folder, tmp_path):
    datasets = pytest.importorskip("datasets")
    data, lengths = _dataset()
    table = datasets.Dataset.from_list([{**d, "length": 100 - n} for d, n in zip(data, lengths)])
    ours = Trainer(model=AutoModelForCausalLM.from_pretrained(folder), train_dataset=table,
                   args=TrainingArguments(str(tmp_path), remove_unused_columns=False, group_by_length=True, **ARGS))
    assert ours._lengths(table) == [100 - n for n in lengths]
    with pytest.raises(ValueError, match="'input_ids' key"):
        ours._lengths([[1, 2, 3]])
    with pytest.raises(ValueError, match="conflicts"):
        TrainingArguments(str(tmp_path), group_by_length=True, train_sampling_strategy="sequential")
