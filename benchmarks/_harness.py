"""What every benchmark here shares: best-of-rounds timing, resident memory, the machine line, and rewriting the
benchmark's own section of docs/benchmarks.md. Imports neither MindSpore nor torch, so a parent process that
only spawns the measured sides stays small."""
import os
import re
import time

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks.md")


def sync(out):
    """Wait for a result: the first tensor of a (nested) tuple is read back to the host (MindSpore runs
    asynchronously; reading one output waits for the launch that made it)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "asnumpy"):
        out.asnumpy()


def best_time(fn, rounds, inner):
    """Best over `rounds` of the mean time of `inner` calls (seconds), after one warm-up call; the last call's
    result is synced before each round's clock stops."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        sync(out)
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def keep_best(times, key, seconds):
    """times[key] = the smaller of its value and `seconds` (interleaved implementations each keep their best)."""
    times[key] = min(times.get(key, float("inf")), seconds)
    return times[key]


def peak_rss_mb():
    """This process's peak resident set size so far (MB, Linux's ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb():
    """This process's resident set size now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_name():
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


# the instruction sets the kernels and MindSpore's / torch's GEMMs choose between (csrc/ is built -march=native)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "sve")


def cpu_flags():
    """The ISA_FLAGS this CPU has (/proc/cpuinfo's flags, or Features on ARM), in ISA_FLAGS' order."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in ISA_FLAGS if flag in have]
    except OSError:
        pass
    return []


def machine():
    """"2-core CPU (<model name>; avx2 fma)": the machine a table was measured on, for its header sentence."""
    flags = " ".join(cpu_flags()) or "no AVX2"
    return f"{os.cpu_count()}-core CPU ({cpu_name()}; {flags})"


def update_docs(section, path=DOCS):
    """Replace this benchmark's own section of docs/benchmarks.md (the one headed by the section's first line,
    "## <title>"), keeping every other section as it is; a new section goes at the end."""
    from mindformers_hf.safetensors_io import atomic_write_text

    heading = section.splitlines()[0]
    if not heading.startswith("## "):
        raise ValueError(f"a benchmark section starts with its '## ' heading, not {heading!r}")
    text = open(path).read() if os.path.isfile(path) else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


def arguments(doc, quick_help="fewer repeats; do not touch docs/benchmarks.md", skip_model=True, extra=None):
    """The flags every benchmark takes: --quick (and --skip-model for those with a whole-model table); `extra`
    adds its own to the parser. Returns (parser, args)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if skip_model:
        parser.add_argument("--skip-model", action="store_true")
    if extra:
        extra(parser)
    return parser, parser.parse_args()


def require_cpu(message):
    """Exit with `message` unless MindSpore runs on the CPU backend (the kernels and tables measured here)."""
    import sys

    import mindspore as ms

    if ms.get_context("device_target") != "CPU":
        sys.exit(message)


def publish(section, quick):
    """Print the section; a full run (not --quick) also writes it into docs/benchmarks.md."""
    print(section)
    if not quick:
        update_docs(section)
