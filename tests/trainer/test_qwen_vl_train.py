"""Qwen-VL (v1) fine-tuned through the Trainer with an image in every example: the loss and grad_norm of two AdamW
steps and every weight after them (vision tower included) equal transformers' Trainer on the torch reference of the
published QWenLMHeadModel (tests/models/qwen_vl_fixtures.py: transformers has no Qwen-VL class). Each step takes the
whole 2-example dataset as one micro-batch: the published loss is a per-batch mean (its forward takes no
num_items_in_batch), so only the set of examples must match, not the order."""
import numpy as np
import pytest

from tests.models.matrix_train import ARGS, GRAD_NORM_RTOL, LOSS_RTOL, WEIGHT_RTOL
from tests.models.qwen_vl_fixtures import IMG_START, QUERIES, VISUAL, published_reference, qwen_vl_checkpoint

STEPS = dict(ARGS, per_device_train_batch_size=2, gradient_accumulation_steps=1, num_train_epochs=2,
             remove_unused_columns=False)


def _dataset(rows=2):
    """Text, an <img> span of 256 <imgpad> tokens, text; labels on the text (the first row's only after the image)."""
    rng = np.random.default_rng(3)
    size = VISUAL["image_size"]
    out = []
    for row in range(rows):
        span = [IMG_START] + [IMG_START + 2] * QUERIES + [IMG_START + 1]
        ids = [int(i) for i in rng.integers(3, 256, 3)] + span + [int(i) for i in rng.integers(3, 256, 4)]
        labels = [-100 if 3 <= n < 3 + len(span) or (row == 0 and n < 3) else i for n, i in enumerate(ids)]
        out.append({"input_ids": ids, "labels": labels,
                    "pixel_values": rng.standard_normal((3, size, size)).astype(np.float32)})
    return out


def _collator(convert):
    def collate(rows):
        ids = np.array([r["input_ids"] for r in rows])
        batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": np.array([r["labels"] for r in rows]),
                 "pixel_values": np.stack([r["pixel_values"] for r in rows])}
        return {k: convert(v) for k, v in batch.items()}
    return collate


def _steps(history):
    return [h for h in history if "loss" in h]


def test_training_steps_match_hf_trainer_on_the_reference(tmp_path):
    import torch
    import transformers

    from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments
    from tests.models.remote_formats import read_tensors

    folder = qwen_vl_checkpoint(tmp_path / "qwen_vl")[0]
    hf = published_reference(folder).train()
    hf_trainer = transformers.Trainer(model=hf, train_dataset=_dataset(), data_collator=_collator(torch.tensor),
                                      args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **STEPS))
    hf_trainer.train()

    ours = AutoModelForCausalLM.from_pretrained(folder)
    trainer = Trainer(model=ours, args=TrainingArguments(str(tmp_path / "ours"), **STEPS), train_dataset=_dataset(),
                      data_collator=_collator(lambda v: v))
    trainer.train()

    got_steps, want_steps = _steps(trainer.state.log_history), _steps(hf_trainer.state.log_history)
    assert [h["step"] for h in got_steps] == [h["step"] for h in want_steps] == [1, 2]
    for got, want in zip(got_steps, want_steps):
        assert got["loss"] == pytest.approx(want["loss"], rel=LOSS_RTOL), (got, want)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=GRAD_NORM_RTOL), (got, want)
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-12)

    ours.save_pretrained(tmp_path / "saved")  # the published names, as the reference's state_dict
    got, start = read_tensors(tmp_path / "saved"), read_tensors(folder)
    want = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert sorted(got) == sorted(want)
    moved = [k for k in want if np.abs(want[k] - start[k]).max() > 0]
    assert any(k.startswith("transformer.visual.") for k in moved) and any(".attn.c_attn." in k for k in moved)
    for name, value in want.items():
        rel = np.linalg.norm(got[name] - value) / max(np.linalg.norm(value), 1e-12)
        assert rel <= WEIGHT_RTOL, f"{name}: relative difference {rel:.2e}"
