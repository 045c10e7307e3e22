"""`mindformers-hf serve DIR` as a user runs it: a separate process on 127.0.0.1, queried with `openai`."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_answers_openai_clients(chat_llama):
    port = _free_port()
    env = {**os.environ, "MINDFORMERS_HF_API_KEY": "from-env",
           "PYTHONPATH": os.pathsep.join(p for p in (os.path.join(os.path.dirname(__file__), "..", "..", "src"),
                                                     os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "mindformers_hf.commands.cli", "serve", chat_llama,
                             "--port", str(port), "--served-model-name", "tiny", "--max-num-seqs", "4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="from-env", max_retries=0, timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.5)
        assert [m.id for m in models.data] == ["tiny"]
        resp = client.completions.create(model="tiny", prompt="hello", max_tokens=3, temperature=0)
        assert resp.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    # uvicorn shuts down gracefully, then re-raises the signal it caught (so the exit code names a signal)
    assert "Finished server process" in out and proc.returncode in (0, -signal.SIGINT, -signal.SIGTERM), out
    assert "completion cmpl-" in out  # one log line per request
