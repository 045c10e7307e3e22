"""The `mindformers-hf` command: generate on the embedded default model, chat turns, bad folders."""
import subprocess
import sys

import pytest

from mindformers_hf.commands import cli


def test_generate_with_default_model_streams_text(smollm2_gguf):
    result = subprocess.run(
        [sys.executable, "-m", "mindformers_hf.commands.cli", "generate", "--chat-template", "--max-new-tokens",
         "8", "What is the capital of France?"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.strip()) > 0


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["generate", "--model", str(tmp_path / "nope"), "hi"])


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
