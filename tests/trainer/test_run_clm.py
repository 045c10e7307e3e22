"""examples/run_clm.py end to end on a text file, a tiny LLaMA and a character tokenizer."""
import json
import os
import runpy
import sys

import pytest

from tests.trainer.conftest import TEXT

pytest.importorskip("datasets")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_run_clm_trains_and_evaluates(char_llama, char_tokenizer_dir, tmp_path, monkeypatch):
    text_file = tmp_path / "notes.txt"
    text_file.write_text(TEXT.replace(". ", ".\n"))
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "run_clm.py", "--model_name_or_path", char_llama, "--tokenizer_name", char_tokenizer_dir,
        "--train_file", str(text_file), "--validation_split_percentage", "20", "--block_size", "32",
        "--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "4", "--learning_rate", "3e-3",
        "--per_device_train_batch_size", "4", "--logging_steps", "2", "--save_steps", "4", "--disable_tqdm", "true",
        "--report_to", "none"])
    runpy.run_path(os.path.join(REPO, "examples", "run_clm.py"), run_name="__main__")
    with open(out / "all_results.json") as f:
        results = json.load(f)
    assert results["train_samples"] > 0 and results["eval_samples"] > 0
    assert results["perplexity"] < 40  # vocabulary of 40: a model that learnt nothing sits near 40
    assert os.path.isfile(out / "model.safetensors") and os.path.isdir(out / "checkpoint-4")
