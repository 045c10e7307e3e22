"""Model calls from several threads at once, run by tests/runtime/test_threads.py in a subprocess: when
MindSpore's runtime is entered from two threads the process segfaults (exit 139), which must fail that test
rather than kill pytest.

    python tests/runtime/threads_script.py FOLDER crash           # forwards on two models; forward beside generate
    python tests/runtime/threads_script.py FOLDER stress SECONDS  # forward, 2 x generate, Trainer steps for SECONDS

Every thread checks its results against the same call made alone beforehand. Prints one line `RESULT {json}`
(calls per thread, errors) and exits 1 if any thread failed.
"""
import json
import sys
import threading
import time
import traceback

import numpy as np

from mindformers_hf import AutoModelForCausalLM


class Worker(threading.Thread):
    def __init__(self, name, call, deadline=None, times=None):
        super().__init__(name=name, daemon=True)
        self.call, self.deadline, self.times = call, deadline, times
        self.calls, self.error = 0, None

    def run(self):
        try:
            while self.calls == 0 or (self.times is not None and self.calls < self.times) or \
                    (self.deadline is not None and time.monotonic() < self.deadline[0]):
                self.call()
                self.calls += 1
        except Exception:  # noqa: BLE001 -- reported to the parent test
            self.error = traceback.format_exc()[-1500:]


def forward_check(model, ids):
    want = model(input_ids=ids).logits

    def call():
        np.testing.assert_allclose(model(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
    return call


def generate_check(model, ids, streamed=False, **kwargs):
    want = model.generate(input_ids=ids, do_sample=False, **kwargs)

    class Collect:  # a streamer: generate calls put() and end()
        def put(self, value):
            self.tokens.append(np.asarray(value).reshape(-1))

        def end(self):
            pass

    def call():
        streamer = Collect() if streamed else None
        if streamer is not None:
            streamer.tokens = []
        got = model.generate(input_ids=ids, do_sample=False, streamer=streamer, **kwargs)
        np.testing.assert_array_equal(got, want)
        if streamer is not None:
            np.testing.assert_array_equal(np.concatenate(streamer.tokens), want[0])
    return call


def trainer_steps(folder, deadline):
    """A real Trainer.train() on its own model whose callback ends it at the deadline."""
    from mindformers_hf.trainer import Trainer, TrainerCallback, TrainingArguments
    import tempfile

    class StopAtDeadline(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = time.monotonic() >= deadline[0]
            return control

    rng = np.random.default_rng(0)
    rows = [{"input_ids": ids, "labels": ids} for ids in rng.integers(3, 128, size=(4000, 12)).tolist()]
    model = AutoModelForCausalLM.from_pretrained(folder)
    output_dir = tempfile.mkdtemp()
    args = TrainingArguments(output_dir, per_device_train_batch_size=2, max_steps=2000, learning_rate=1e-3,
                             logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[StopAtDeadline()])

    def call():
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert losses and all(np.isfinite(losses)), losses
    return call


def run(workers):
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {w.name: {"calls": w.calls, "error": w.error} for w in workers}


def main():
    folder, mode = sys.argv[1], sys.argv[2]
    ids = np.random.default_rng(0).integers(3, 128, size=(1, 20)).astype(np.int64)
    first = AutoModelForCausalLM.from_pretrained(folder)
    if mode == "crash":
        second = AutoModelForCausalLM.from_pretrained(folder)
        report = run([Worker("forward on model 1", forward_check(first, ids), times=40),
                      Worker("forward on model 2", forward_check(second, ids), times=40)])
        report.update(run([Worker("forward", forward_check(first, ids), times=40),
                           Worker("generate", generate_check(first, ids, max_new_tokens=24), times=4)]))
    else:
        deadline = [None]  # set once every reference result is computed
        train = trainer_steps(folder, deadline)
        workers = [Worker("forward", forward_check(first, ids), deadline),
                   Worker("generate", generate_check(first, ids, max_new_tokens=24), deadline),
                   Worker("generate, streamed", generate_check(first, ids[:, :9], streamed=True, max_new_tokens=30),
                          deadline),
                   Worker("Trainer steps", train, deadline)]
        deadline[0] = time.monotonic() + float(sys.argv[3])
        report = run(workers)
    print("RESULT " + json.dumps(report), flush=True)
    sys.exit(1 if any(r["error"] for r in report.values()) else 0)


if __name__ == "__main__":
    main()
