"""Kill a training run right after a checkpoint, resume it, and get what an uninterrupted run gets."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 20 examples, batch 2 x 2 accumulation: 5 optimizer steps per epoch; 8 steps cross an epoch boundary.
ARGS = dict(learning_rate=2e-3, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=8,
            lr_scheduler_type="cosine", warmup_steps=2, weight_decay=0.01, max_grad_norm=1.0, logging_steps=1,
            save_steps=3, save_total_limit=3, disable_tqdm=True, seed=3)
KILL_AT = 6  # after checkpoint-6 is written: mid-epoch (the second epoch's first step), batches to skip


def dataset():
    rng = np.random.default_rng(11)
    # variable lengths, so the batches differ in shape and padding goes through the collator
    return [{"input_ids": rng.integers(3, 128, int(n)).tolist()} for n in rng.integers(6, 14, 20)]


def collate(features):
    from mindformers_hf.data import default_data_collator

    width = max(len(f["input_ids"]) for f in features)
    padded = [{"input_ids": f["input_ids"] + [0] * (width - len(f["input_ids"])),
               "attention_mask": [1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])),
               "labels": f["input_ids"] + [-100] * (width - len(f["input_ids"]))} for f in features]
    return default_data_collator(padded)


def _train(folder, out_dir, resume=None, callbacks=None):
    model = AutoModelForCausalLM.from_pretrained(folder)
    trainer = Trainer(model=model, args=TrainingArguments(str(out_dir), **ARGS), train_dataset=dataset(),
                      data_collator=collate, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


# The killed run also proves training needs no torch: the subprocess cannot see it.
_KILLED_RUN = textwrap.dedent("""
    import importlib.util, os, signal, sys

    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "torch" else _find_spec(name, *a)

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise ModuleNotFoundError("No module named 'torch' (hidden by the test)")

    sys.meta_path.insert(0, NoTorch())
    sys.path.insert(0, {repo!r})
    from mindformers_hf.trainer import TrainerCallback
    from tests.trainer.test_resume import KILL_AT, _train

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == KILL_AT:
                assert "torch" not in sys.modules
                os.kill(os.getpid(), signal.SIGKILL)

    _train({folder!r}, {out!r}, callbacks=[Kill()])
""")


def _losses(history):
    return [(h["step"], h["loss"], h["learning_rate"], h["grad_norm"]) for h in history if "loss" in h]


@pytest.fixture(scope="module")
def uninterrupted(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    model, trainer = _train(tiny_llama, out)
    return out, model, trainer


def _assert_same_run(model, trainer, full_model, full):
    assert trainer.state.global_step == full.state.global_step == ARGS["max_steps"]
    got, want = _losses(trainer.state.log_history), _losses(full.state.log_history)
    assert len(got) == len(want)
    for row_got, row_want in zip(got, want):  # (newer pytest's approx refuses nested tuples)
        assert tuple(row_got) == pytest.approx(tuple(row_want), rel=1e-6)
    full_weights = dict(full_model.parameters_and_names())
    for name, param in model.parameters_and_names():
        np.testing.assert_allclose(param.asnumpy(), full_weights[name].asnumpy(), rtol=1e-6, atol=1e-8)


def test_kill_and_resume_matches_uninterrupted_run(tiny_llama, uninterrupted, tmp_path):
    _, full_model, full = uninterrupted
    out = tmp_path / "killed"
    script = _KILLED_RUN.format(repo=REPO, folder=tiny_llama, out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert sorted(d for d in os.listdir(out) if d.startswith("checkpoint-")) == ["checkpoint-3", "checkpoint-6"]
    model, resumed = _train(tiny_llama, out, resume=True)
    _assert_same_run(model, resumed, full_model, full)


def test_resume_from_explicit_path(tiny_llama, uninterrupted, tmp_path):
    out, full_model, full = uninterrupted
    with open(out / "checkpoint-3" / "trainer_state.json") as f:
        assert json.load(f)["global_step"] == 3
    model, again = _train(tiny_llama, tmp_path, resume=str(out / "checkpoint-3"))
    _assert_same_run(model, again, full_model, full)


def test_resume_without_checkpoint_raises(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="No valid checkpoint"):
        _train(tiny_llama, tmp_path, resume=True)
