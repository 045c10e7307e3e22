"""`mindformers-hf eval` against lm_eval's own CLI (`lm_eval run --model hf`): the same result and sample files."""
import functools
import glob
import json
import os
import sys

import pytest

pytest.importorskip("lm_eval")


def assert_close(got, want, where):
    """Strings and flags equal, numbers within 2e-3 (log-likelihoods) or 1e-3 relative (metrics)."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-3, abs=2e-3), where
    elif isinstance(want, str) and got != want and _number(want) is not None:  # lm_eval writes resps as text
        assert _number(got) == pytest.approx(_number(want), abs=2e-3), where
    else:
        assert got == want, where


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_outputs(folder):
    (results_file,) = glob.glob(os.path.join(folder, "*", "results_*.json"))
    with open(results_file) as f:
        results = json.load(f)
    samples = {}
    for path in glob.glob(os.path.join(folder, "*", "samples_*.jsonl")):
        task = os.path.basename(path)[len("samples_"):].rsplit("_", 1)[0]
        with open(path) as f:
            samples[task] = [json.loads(line) for line in f]
    return results, samples


def test_eval_command_writes_lm_evals_files_with_hfs_numbers(char_llama_dir, task_dir, tmp_path, monkeypatch):
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.tasks import TaskManager

    from mindformers_hf.commands.cli import main

    # both CLIs index only --include_path's tasks: lm_eval's thousands of built-in task YAMLs cost 10-20 s a CLI
    # on a slow machine, and which tasks exist is lm_eval's business, not what this test compares
    monkeypatch.setattr(TaskManager, "__init__", functools.partialmethod(TaskManager.__init__, include_defaults=False))

    flags = ["--model_args", f"pretrained={char_llama_dir},dtype=float32", "--tasks", "tiny_mc,tiny_gen,tiny_rolling",
             "--include_path", task_dir, "--batch_size", "2", "--limit", "3", "--log_samples", "--seed", "0",
             "--device", "cpu"]
    assert main(["eval", *flags, "--output_path", str(tmp_path / "ours")]) == 0
    monkeypatch.setattr(sys, "argv", ["lm_eval", "run", "--model", "hf", *flags,
                                      "--output_path", str(tmp_path / "hf")])
    cli_evaluate()

    ours, ours_samples = read_outputs(tmp_path / "ours")
    hf, hf_samples = read_outputs(tmp_path / "hf")
    assert ours["config"]["model"] == "mindformers_hf" and hf["config"]["model"] == "hf"
    assert_close(ours["results"], hf["results"], "results")
    assert set(ours_samples) == set(hf_samples) == {"tiny_mc", "tiny_gen", "tiny_rolling"}
    for task in hf_samples:
        for got, want in zip(ours_samples[task], hf_samples[task]):
            for key in ("doc_id", "arguments", "resps", "filtered_resps", "target"):
                assert_close(got[key], want[key], f"{task}.{key}")


def test_eval_help_names_our_model(capsys):
    from mindformers_hf.commands.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--include_path" in out and "--apply_chat_template" in out and "default: mindformers_hf" in out


def test_eval_without_lm_eval_names_the_extra(monkeypatch):
    from mindformers_hf.commands import cli, eval as eval_command

    monkeypatch.setattr(eval_command, "find_spec", lambda name: None)
    args = cli.build_parser().parse_args(["eval", "--tasks", "hellaswag", "--model_args", "pretrained=x"])
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[eval\]"'):
        args.func(args)
