"""Model calls from any thread (runtime.model_lock): forwards on two models, a forward beside a generate, a
Trainer beside both, and a streamer whose consumer calls the model while generate runs.

MindSpore crashes the whole process (exit 139) when two threads run ops at once, so the concurrent runs happen
in a subprocess (threads_script.py). MINDFORMERS_HF_STRESS_SECONDS sets how long the stress test runs (10 s).
"""
import json
import os
import queue
import subprocess
import sys
import threading

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, runtime
from mindformers_hf.ops import registry

SCRIPT = os.path.join(os.path.dirname(__file__), "threads_script.py")


def _run_script(tmp_path, *args, timeout):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_forwards_on_two_models_and_forward_beside_generate(tiny_llama, tmp_path):
    """Both crashed before (segfault; 'The pointer[runtime_info] is null'; a Reshape of another call's shape)."""
    report = _run_script(tmp_path, tiny_llama, "crash", timeout=600)
    assert all(r["calls"] >= 4 and r["error"] is None for r in report.values()), report


def test_stress_forward_generate_and_trainer_steps_at_once(tiny_llama, tmp_path):
    seconds = float(os.environ.get("MINDFORMERS_HF_STRESS_SECONDS", "5"))
    report = _run_script(tmp_path, tiny_llama, "stress", seconds, timeout=600 + 2 * seconds)
    assert set(report) == {"forward", "generate", "generate, streamed", "Trainer steps"}
    assert all(r["calls"] >= 1 and r["error"] is None for r in report.values()), report


def test_streamer_consumer_may_call_the_model_while_generate_runs(tiny_llama):
    """The lock is held per decode step, not across generate: a streamer whose put() waits for its consumer
    thread to run a forward first (a bounded hand-off) must not deadlock."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = np.random.default_rng(1).integers(3, 128, size=(1, 7)).astype(np.int64)
    handoff, done = queue.Queue(maxsize=1), queue.Queue()
    forwards = []

    class WaitsForConsumer:
        def put(self, value):
            handoff.put(value)
            done.get(timeout=60)  # raises (and ends generate) instead of hanging if the consumer is blocked

        def end(self):
            handoff.put(None)

    def consume():
        while handoff.get() is not None:
            forwards.append(model(input_ids=ids).logits)
            done.put(True)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, streamer=WaitsForConsumer())
    consumer.join(60)
    assert not consumer.is_alive() and len(forwards) == 1 + out.shape[1] - ids.shape[1]  # the prompt, each token
    np.testing.assert_array_equal(out, model.generate(input_ids=ids, max_new_tokens=6, do_sample=False))


def test_model_lock_is_reentrant_and_lent_to_a_helper_thread():
    from concurrent.futures import ThreadPoolExecutor

    entered = threading.Event()

    def helper():
        with runtime.model_lock():
            return "ran"

    def other_thread():
        with runtime.model_lock():
            entered.set()

    with runtime.model_lock():
        with runtime.model_lock():  # re-entrant
            with ThreadPoolExecutor(1) as pool:  # a helper working for the holder (the decode-step tracer)
                assert runtime.run_as_holder(pool.submit, helper).result(5) == "ran"
            thread = threading.Thread(target=other_thread)
            thread.start()
            assert not entered.wait(0.3)  # any other thread waits
    assert entered.wait(5)
    thread.join()


def test_use_kernels_mode_is_per_thread():
    seen = {}
    inside, leave = threading.Event(), threading.Event()

    def in_block():
        with registry.use_kernels("reference"):
            inside.set()
            leave.wait(5)
            seen["inside"] = registry.current_mode()

    thread = threading.Thread(target=in_block)
    thread.start()
    assert inside.wait(5)
    with registry.use_kernels("all"):
        seen["other"] = registry.current_mode()
        leave.set()
        thread.join()
        seen["other after"] = registry.current_mode()
    assert seen == {"inside": "reference", "other": "all", "other after": "all"}


@pytest.fixture(autouse=True)
def _no_kernel_mode_leak():
    before = registry.current_mode()
    yield
    assert registry.current_mode() == before
