"""MoE experts: our per-expert reference vs our grouped implementation vs HF transformers, in one process.

    python benchmarks/moe.py            # prints the tables and writes the "MoE" section of docs/benchmarks.md
    python benchmarks/moe.py --quick    # fewer repeats, no docs update

Op: the routed-expert compute alone (`ops.moe_experts`: x [T, H], top-k routing, stacked SwiGLU experts) at
T = 1 (decode), 64 and 512 tokens, for Mixtral-style 8 experts / top-2 and DeepSeek-style 64 experts / top-6.
HF's column is transformers' own experts module (MixtralExperts, its default experts implementation) on
torch, same weights and routing. Model: prefill of a random 2-layer Mixtral (hidden 256, 8 experts of 512)
through our MixtralForCausalLM with each implementation, and HF's MixtralForCausalLM on the same checkpoint.
Times are the best of several rounds, implementations interleaved (other processes share the two cores).
Ratios > 1 mean the grouped implementation is faster.
"""
import os
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import mindspore as ms

from mindformers_hf import runtime  # noqa: F401  (synchronous CPU launch, as the models run)
from mindformers_hf.ops import moe, registry
from _harness import arguments, best_time, keep_best, machine, publish, require_cpu

CASES = [  # (experts, top_k, hidden, expert width)
    (8, 2, 256, 512),
    (64, 6, 256, 128),
]
TOKENS = (1, 64, 512)


def hf_experts(experts, hidden, inter, gate_up, down):
    import torch
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    config = MixtralConfig(hidden_size=hidden, intermediate_size=inter, num_local_experts=experts)
    module = MixtralExperts(config).eval()
    with torch.no_grad():
        module.gate_up_proj.copy_(torch.from_numpy(gate_up))
        module.down_proj.copy_(torch.from_numpy(down))
    return module, getattr(config, "_experts_implementation", None) or "eager"


def bench_ops(rounds, inner):
    import torch

    rows, hf_impl = [], None
    rng = np.random.default_rng(0)
    for experts, top_k, hidden, inter in CASES:
        gate_up = (0.05 * rng.standard_normal((experts, 2 * inter, hidden))).astype(np.float32)
        down = (0.05 * rng.standard_normal((experts, hidden, inter))).astype(np.float32)
        module, hf_impl = hf_experts(experts, hidden, inter, gate_up, down)
        gu, dn = ms.Tensor(gate_up), ms.Tensor(down)
        for tokens in TOKENS:
            x = rng.standard_normal((tokens, hidden)).astype(np.float32)
            logits = rng.standard_normal((tokens, experts)).astype(np.float32)
            weights, indices = moe.route_tokens(ms.Tensor(logits), top_k, norm_topk_prob=True)
            xm = ms.Tensor(x)
            xt, it, wt = torch.from_numpy(x), torch.from_numpy(indices.asnumpy().astype(np.int64)), \
                torch.from_numpy(weights.asnumpy())
            times = {}
            for _ in range(2):  # interleave the three, keep each one's best
                for name, fn in (("reference", lambda: moe.moe_experts_reference(xm, indices, weights, gu, dn)),
                                 ("grouped", lambda: moe.moe_experts_grouped(xm, indices, weights, gu, dn)),
                                 ("hf", lambda: _torch_call(module, xt, it, wt))):
                    keep_best(times, name, best_time(fn, rounds, inner))
            rows.append((f"{experts} experts, top-{top_k}, H {hidden}, I {inter}", tokens, times))
            print(rows[-1], flush=True)
    return rows, hf_impl


def _torch_call(module, x, indices, weights):
    import torch

    with torch.no_grad():
        return module(x, indices, weights)


def bench_model(rounds):
    import torch
    import transformers

    from mindformers_hf import AutoModelForCausalLM

    folder = tempfile.mkdtemp(prefix="moe_bench_")
    torch.manual_seed(0)
    config = transformers.MixtralConfig(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=8,
                                        num_experts_per_tok=2, max_position_embeddings=1024)
    transformers.MixtralForCausalLM(config).save_pretrained(folder)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = np.random.default_rng(0).integers(0, 1024, size=(1, 256)).astype(np.int64)
    grouped = registry._TABLE["moe_experts"]["grouped"]

    def ours_with(default):
        def run():
            grouped.default = default  # "auto" picks grouped only while it is marked default
            try:
                return ours(input_ids=ms.Tensor(ids)).logits
            finally:
                grouped.default = True
        return run

    def hf():
        with torch.no_grad():
            return theirs(input_ids=torch.from_numpy(ids)).logits

    times = {}
    for _ in range(2):
        for name, fn in (("reference", ours_with(False)), ("grouped", ours_with(True)), ("hf", hf)):
            keep_best(times, name, best_time(fn, rounds, 1))
    return times


def markdown(op_rows, hf_impl, model_times):
    lines = ["## MoE", "",
             f"`python benchmarks/moe.py` on this {machine()} (MindSpore PyNative, fp32; torch for HF). Routed-expert "
             f"compute (`ops.moe_experts`); HF is transformers' MixtralExperts (`{hf_impl}` experts implementation) "
             "on the same weights and routing. Ratios > 1: grouped is faster.", "",
             "| experts | tokens | reference ms | grouped ms | HF ms | grouped vs reference | grouped vs HF |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for case, tokens, t in op_rows:
        lines.append(f"| {case} | {tokens} | {t['reference'] * 1e3:.2f} | {t['grouped'] * 1e3:.2f} | "
                     f"{t['hf'] * 1e3:.2f} | {t['reference'] / t['grouped']:.2f}x | {t['hf'] / t['grouped']:.2f}x |")
    if model_times:
        t = model_times
        lines += ["", "Whole model: prefill of 256 tokens, random 2-layer Mixtral (hidden 256, 8 experts of 512, top-2).",
                  "", "| ours, reference ms | ours, grouped ms | HF ms | grouped vs reference | grouped vs HF |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {t['reference'] * 1e3:.1f} | {t['grouped'] * 1e3:.1f} | {t['hf'] * 1e3:.1f} | "
                  f"{t['reference'] / t['grouped']:.2f}x | {t['hf'] / t['grouped']:.2f}x |"]
    return "\n".join(lines) + "\n"


def main():
    _, args = arguments(__doc__)
    require_cpu("benchmarks/moe.py measures on the CPU backend")
    rounds, inner = (2, 2) if args.quick else (3, 5)
    op_rows, hf_impl = bench_ops(rounds, inner)
    model_times = None if args.skip_model else bench_model(2 if args.quick else 3)
    section = markdown(op_rows, hf_impl, model_times)
    publish(section, args.quick)


if __name__ == "__main__":
    main()
