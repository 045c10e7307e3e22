"""`lm_eval --model local-completions` against our server on 127.0.0.1 equals `lm_eval --model hf` (torch) on
the same weights: a log-likelihood task (multiple choice: echo + logprobs, max_tokens=1) and a generate_until
task (stop strings), on local tasks (no hub)."""
import math

import pytest

from ..evaluation.conftest import write_tasks
from .conftest import API_KEY, MODEL_NAME, Served

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("tenacity", reason="lm_eval's API models need lm-eval[api]")

TASKS = ["tiny_mc", "tiny_gen"]
LIMIT = 3


@pytest.fixture(scope="module")
def server(chat_llama):
    served = Served(chat_llama, max_num_seqs=4, max_num_batched_tokens=64, block_size=4, num_blocks=128)
    yield served
    served.close()


def evaluate(model, model_args, task_dir):
    from ..evaluation.conftest import local_task_manager

    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS, limit=LIMIT, batch_size=2,
                                   device="cpu", task_manager=local_task_manager(task_dir), log_samples=True)


def test_local_completions_against_the_server_equals_lm_eval_hf(server, chat_llama, tmp_path, monkeypatch):
    task_dir = write_tasks(tmp_path / "tasks")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)     # local-completions sends it as the bearer token
    ours = evaluate("local-completions", f"model={MODEL_NAME},base_url={server.url}/v1/completions,"
                    f"tokenizer_backend=huggingface,tokenizer={chat_llama},num_concurrent=2,max_retries=1,"
                    "max_length=256", task_dir)
    hf = evaluate("hf", f"pretrained={chat_llama},dtype=float32", task_dir)
    for task in TASKS:
        assert len(ours["samples"][task]) == len(hf["samples"][task]) == LIMIT
        for key, want in hf["results"][task].items():
            if isinstance(want, float) and math.isfinite(want):
                assert ours["results"][task][key] == pytest.approx(want, rel=1e-6), (task, key)
        for got, want in zip(ours["samples"][task], hf["samples"][task]):
            assert got["arguments"] == want["arguments"]
            for got_resp, want_resp in zip(got["resps"], want["resps"]):
                if task == "tiny_gen":                          # the same greedy text, cut at the same stops
                    assert got_resp == want_resp
                else:                                           # (log-likelihood, is_greedy): fp32 vs fp32,
                    (got_ll, got_greedy), (want_ll, want_greedy) = got_resp[0], want_resp[0]  # other kernels
                    assert got_greedy == want_greedy and got_ll == pytest.approx(want_ll, abs=2e-3)
    assert any(s["resps"][0][0] for s in ours["samples"]["tiny_gen"])   # something was generated
    assert not server.engine.requests and server.engine.kv_blocks()[0] == 0
