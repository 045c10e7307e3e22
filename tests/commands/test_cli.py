"""The `mindformers-hf` command: generate on the embedded default model, chat turns, bad folders, quiet logs."""
import os
import subprocess
import sys

import pytest

from mindformers_hf.commands import cli

from ..conftest import make_hf_checkpoint
from ..trainer.conftest import make_char_tokenizer


# the README's main command on the default model: tests/test_gguf_metadata.py::test_main_command_runs_with_torch_absent


@pytest.mark.parametrize("name", ["{tmp}/nope", "./nope", "../nope/model", "org/name/extra", "org//name"])
def test_missing_model_folder_is_a_clear_error(tmp_path, name):
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["generate", "--model", name.format(tmp=tmp_path), "hi"])


def test_a_repo_id_that_is_no_folder_goes_to_the_hub_loader(monkeypatch, tmp_path):
    # (tests/hub/test_cli_hub.py loads one from the local hub server)
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["generate", "--model", "org/tiny-llama", "hi"])
    assert cli._resolve_model(args) == ("org/tiny-llama", None)
    (tmp_path / "org" / "tiny-llama").mkdir(parents=True)  # an existing folder of that name wins, as in HF
    (tmp_path / "org" / "tiny-llama" / "m.gguf").write_bytes(b"")
    assert cli._resolve_model(args) == ("org/tiny-llama", "m.gguf")


def _run_cli(*argv, env=None):
    env = {k: v for k, v in os.environ.items() if k != "GLOG_v"} if env is None else env
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-m", "mindformers_hf.commands.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_generate_prints_no_mindspore_log_lines_unless_verbose(tmp_path):
    folder = make_char_tokenizer(make_hf_checkpoint(tmp_path / "tiny", vocab_size=40, seed=1))
    argv = ("generate", "--model", folder, "--max-new-tokens", "3", "the quick")
    quiet = _run_cli(*argv)
    assert quiet.stdout.startswith("the quick") and len(quiet.stdout) > len("the quick")
    # MindSpore writes its log lines to stderr, which the terminal shows in the middle of the reply
    for stream in (quiet.stdout, quiet.stderr):
        assert "[WARNING]" not in stream and "[INFO]" not in stream, stream[-2000:]
    # --verbose shows them: compiling the prefill graph makes MindSpore warn
    verbose = _run_cli(*argv, "--verbose")
    assert "[WARNING]" in verbose.stderr and verbose.stdout == quiet.stdout


def test_chat_turns_reset_and_exit(smollm2, monkeypatch, capsys):
    typed = iter(["What is 2+2?", "/reset", "Say hi", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    monkeypatch.setattr(cli, "_load", lambda args: (smollm2.ours, smollm2.tokenizer))
    calls = []
    real_generate = smollm2.ours.generate

    def recording_generate(**kwargs):
        calls.append(kwargs["input_ids"])
        return real_generate(**kwargs)

    monkeypatch.setattr(smollm2.ours, "generate", recording_generate, raising=False)
    assert cli.main(["chat", "--max-new-tokens", "4"]) == 0
    assert len(calls) == 2
    # after /reset the second prompt holds only the new user turn
    second = smollm2.tokenizer.decode(list(calls[1][0]))
    assert "Say hi" in second and "2+2" not in second
    assert "(conversation reset)" in capsys.readouterr().err
