"""report_to="tensorboard": event files TensorBoard reads, written without torch, holding what transformers'
TensorBoardCallback (torch's SummaryWriter) writes for the same run: the same tags, our logged values."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.trainer import Trainer, TrainingArguments
from mindformers_hf.trainer.tensorboard import crc32c
from tests.trainer.test_trainer_parity import _dataset

ARGS = dict(max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2, logging_steps=1, eval_strategy="steps", eval_steps=2,
            save_strategy="no", report_to="tensorboard", disable_tqdm=True, seed=3)


def _read(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = [f for f in os.listdir(folder) if f.startswith("events.out.tfevents.")]
    assert len(files) == 1, files
    acc = EventAccumulator(folder, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = {tag: [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}
    return scalars, texts


def test_crc32c_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
    assert crc32c(b"\x00" * 32) == 0x8A9136AA


def test_event_files_match_transformers_tensorboard_callback(tiny_llama, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    import torch
    import transformers

    data = _dataset()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "hf_tb"))
    hf = transformers.Trainer(
        model=transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
        args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **ARGS),
        train_dataset=data, eval_dataset=data[:4])
    hf.train()
    want_scalars, want_texts = _read(str(tmp_path / "hf_tb"))

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    ours = Trainer(model=AutoModelForCausalLM.from_pretrained(tiny_llama), train_dataset=data, eval_dataset=data[:4],
                   args=TrainingArguments(str(tmp_path / "ours"), **ARGS))
    ours.train()
    scalars, texts = _read(str(tmp_path / "tb"))

    # the same tags (accelerate's preparation time is not ours; the loss-only perplexity is: differences.md)
    assert set(scalars) == set(want_scalars) - {"eval/model_preparation_time"} | {"eval/perplexity"}
    assert set(texts) == set(want_texts) == {"args/text_summary", "model_config/text_summary"}
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [s for s, _ in want_scalars.get(tag, points)], tag
    # the values are our log_history's, at their steps (float32, as simple_value stores them)
    for entry in ours.state.log_history:
        for key, value in entry.items():
            if key == "step":
                continue
            tag = ("eval/" + key[5:]) if key.startswith("eval_") else "train/" + key
            assert (entry["step"], pytest.approx(np.float32(value))) in scalars[tag]
    # and HF's values, to training tolerance (every step sees the whole dataset: the data order cannot matter)
    for tag in ("train/loss", "eval/loss", "train/learning_rate", "train/grad_norm"):
        np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in want_scalars[tag]], rtol=1e-4)
    assert json.loads(texts["args/text_summary"][0])["output_dir"] == str(tmp_path / "ours")
    assert json.loads(texts["model_config/text_summary"][0]) == json.loads(want_texts["model_config/text_summary"][0])


def test_default_folder_and_no_torch(tiny_llama, tmp_path):
    """Without TENSORBOARD_LOGGING_DIR the files go to <output_dir>/runs/<date>_<host>, as transformers'; the
    writer runs in a process where torch cannot be imported."""
    code = f"""
import sys
sys.modules["torch"] = None  # importing torch now fails
from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.trainer import Trainer, TrainingArguments
from tests.trainer.test_trainer_parity import _dataset
args = TrainingArguments({str(tmp_path / 'out')!r}, max_steps=2, per_device_train_batch_size=4, logging_steps=1,
                         save_strategy="no", report_to="tensorboard", disable_tqdm=True)
Trainer(model=AutoModelForCausalLM.from_pretrained({tiny_llama!r}), args=args, train_dataset=_dataset()).train()
"""
    env = {k: v for k, v in os.environ.items() if k != "TENSORBOARD_LOGGING_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.dirname(__file__)))] + sys.path)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    runs = os.listdir(tmp_path / "out" / "runs")
    assert len(runs) == 1
    if pytest.importorskip("tensorboard"):
        scalars, _ = _read(str(tmp_path / "out" / "runs" / runs[0]))
        assert [s for s, _ in scalars["train/loss"]] == [1, 2]
