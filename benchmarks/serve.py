"""Serving speed: `mindformers-hf serve` vs `transformers serve --continuous-batching` (torch) on
SmolLM2-135M-Instruct, both driven by the same `openai` client load, in one invocation.

    python benchmarks/serve.py                  # concurrency 1, 4, 16; prints a table and JSON
    python benchmarks/serve.py --quick          # concurrency 1 and 4, fewer tokens
    python benchmarks/serve.py --sides ours     # one side only

Each side runs as its own server process on 127.0.0.1 (same GGUF, fp32, CPU). For every concurrency c, c
client threads each send `--requests` streaming chat requests back to back (greedy, `max_tokens` output
tokens); one warm-up round per concurrency comes first (it compiles our decode graphs). Measured per
side and concurrency: output tokens/s (all streamed tokens / wall time), time to first token and
inter-token latency (p50 / p99 over all requests). Tokens are counted as content chunks (both servers
send one per token; ours may merge a multi-byte character's tokens into one chunk).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

QUESTIONS = ["Tell me a long story about the sea.", "Explain how a bicycle works, step by step.",
             "Write a poem about autumn leaves.", "Describe the city of Paris to a child."]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(side, port):
    from mindformers_hf.gguf_io import default_gguf_model

    folder, gguf = default_gguf_model()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if side == "ours":
        cmd = [sys.executable, "-m", "mindformers_hf.commands.cli", "serve", folder, "--gguf-file", gguf,
               "--port", str(port), "--served-model-name", "smollm2"]
    else:
        cmd = ["transformers", "serve", f"{folder}:{gguf}", "--continuous-batching", "--device", "cpu",
               "--dtype", "float32", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc


def wait_ready(client, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.models.list().data[0].id
        except Exception:  # noqa: BLE001 -- not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.poll() is not None else ''}")
            time.sleep(1)


def one_request(client, model, question, max_tokens):
    start = time.perf_counter()
    stamps = []
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                            max_tokens=max_tokens, temperature=0, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    return start, stamps


def run_load(client, model, concurrency, requests, max_tokens):
    jobs = [QUESTIONS[i % len(QUESTIONS)] for i in range(concurrency * requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda q: one_request(client, model, q, max_tokens), jobs))
    wall = time.perf_counter() - start
    tokens = sum(len(stamps) for _, stamps in results)
    ttft = sorted(stamps[0] - begin for begin, stamps in results if stamps)
    itl = sorted(b - a for _, stamps in results for a, b in zip(stamps, stamps[1:]))
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")  # noqa: E731
    return {"tokens_per_s": tokens / wall, "ttft_p50": pct(ttft, 0.5), "ttft_p99": pct(ttft, 0.99),
            "itl_p50": pct(itl, 0.5), "itl_p99": pct(itl, 0.99), "tokens": tokens, "wall_s": wall}


def bench_side(side, concurrencies, requests, max_tokens):
    import openai

    port = _free_port()
    proc = start_server(side, port)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=1800)
    try:
        model = wait_ready(client, proc)
        out = {}
        for c in concurrencies:
            run_load(client, model, c, 1, max_tokens)  # warm-up (compiles)
            out[c] = run_load(client, model, c, requests, max_tokens)
            print(side, c, json.dumps({k: round(v, 4) for k, v in out[c].items()}), file=sys.stderr, flush=True)
        return out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sides", default="ours,hf")
    parser.add_argument("--requests", type=int, default=None, help="requests per client thread")
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args()
    concurrencies = (1, 4) if args.quick else (1, 4, 16)
    requests = args.requests or (1 if args.quick else 2)
    max_tokens = args.max_tokens or (32 if args.quick else 128)
    results = {side: bench_side(side, concurrencies, requests, max_tokens) for side in args.sides.split(",")}
    print(f"{'side':6} {'conc':>4} {'tok/s':>8} {'ttft p50':>9} {'ttft p99':>9} {'itl p50':>8} {'itl p99':>8}")
    for side, rows in results.items():
        for c, r in rows.items():
            print(f"{side:6} {c:>4} {r['tokens_per_s']:8.1f} {r['ttft_p50']:9.3f} {r['ttft_p99']:9.3f} "
                  f"{r['itl_p50']:8.3f} {r['itl_p99']:8.3f}")
    if "ours" in results and "hf" in results:
        for c in concurrencies:
            ratio = results["ours"][c]["tokens_per_s"] / results["hf"][c]["tokens_per_s"]
            print(f"throughput ratio ours/hf at {c}: {ratio:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
