"""What resuming checks in the saved trainer_state.json, against transformers' Trainer on the same input.

HF (`Trainer._initialize_state` / `trainer_utils.compare_trainer_and_checkpoint_args`): a resumed state whose
`best_model_checkpoint` folder no longer exists gets a warning and the path is cleared; a checkpoint saved with
another `train_batch_size` (or logging/eval/save steps) gets a warning listing the mismatches.
"""
import json
import os

import numpy as np
import pytest

import mindformers_hf

ARGS = dict(learning_rate=1e-3, per_device_train_batch_size=2, max_steps=2, save_steps=2, logging_steps=1,
            report_to="none", disable_tqdm=True, seed=0, use_cpu=True)


def _data():
    ids = np.random.default_rng(2).integers(3, 128, size=(8, 6))
    return [{"input_ids": row.tolist(), "labels": row.tolist()} for row in ids]


def _run(transformers, folder, out_dir, resume=None, **overrides):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    trainer = transformers.Trainer(model=model, args=transformers.TrainingArguments(str(out_dir),
                                                                                   **{**ARGS, **overrides}),
                                   train_dataset=_data())
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _resume_with_stale_best_and_bigger_batch(lib, folder, out_dir):
    """Train 2 steps (batch 2) and save; point best_model_checkpoint at a deleted folder; resume with batch 4.
    Returns the resumed trainer, the warnings logged while resuming, and the stale path."""
    import transformers.trainer as hf_trainer
    import transformers.trainer_utils as hf_trainer_utils

    from mindformers_hf import utils

    _run(lib, folder, out_dir)
    checkpoint = os.path.join(out_dir, "checkpoint-2")
    state_path = os.path.join(checkpoint, "trainer_state.json")
    with open(state_path) as f:
        state = json.load(f)
    assert state["train_batch_size"] == 2
    stale = os.path.join(str(out_dir), "checkpoint-1-deleted")
    state["best_model_checkpoint"] = stale
    with open(state_path, "w") as f:
        json.dump(state, f)

    warnings = []
    record = lambda message, *a, **k: warnings.append(str(message))  # noqa: E731
    # HF's batch-size warning goes through trainer_utils' logger (warning_once, cached per message: patched
    # here so that both runs are seen); the stale-path warning through the Trainer's logger
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hf_trainer_utils.logger, "warning_once", record)
        patch.setattr(hf_trainer.logger, "warning", record)
        patch.setattr(utils.logger, "warning", record)
        trainer = _run(lib, folder, out_dir, resume=checkpoint, per_device_train_batch_size=4, max_steps=3)
    return trainer, warnings, stale


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    import transformers

    return {name: _resume_with_stale_best_and_bigger_batch(module, tiny_llama, tmp_path_factory.mktemp(name))
            for name, module in (("hf", transformers), ("ours", mindformers_hf))}


def _matching(warnings, text):
    return [w for w in warnings if text in w]


def test_resume_with_another_batch_size_warns_as_transformers(runs):
    for name, (trainer, warnings, _) in runs.items():
        batch = _matching(warnings, "do not match the ones in the `trainer_state.json`")
        assert len(batch) == 1, (name, warnings)
        assert "per_device_train_batch_size: 4 (from args) != 2 (from trainer_state.json)" in batch[0], name
    # the resumed state keeps the saved train_batch_size (HF replaces its state by the loaded one)
    assert runs["ours"][0].state.train_batch_size == runs["hf"][0].state.train_batch_size == 2
    assert _matching(runs["ours"][1], "trainer_state.json") == _matching(runs["hf"][1], "trainer_state.json")


def test_stale_best_model_checkpoint_is_cleared_on_resume(runs):
    for name, (trainer, warnings, stale) in runs.items():
        assert trainer.state.global_step == 3, name
        assert trainer.state.best_model_checkpoint is None, name
        assert _matching(warnings, f"The best checkpoint {stale} recorded in the resumed state does not exist "
                                   "anymore. Ignoring it for this run."), (name, warnings)
        with open(os.path.join(trainer.args.output_dir, "checkpoint-3", "trainer_state.json")) as f:
            assert json.load(f)["best_model_checkpoint"] is None, name
