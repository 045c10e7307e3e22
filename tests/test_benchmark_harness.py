"""benchmarks/_harness.py, shared by the benchmarks: a run rewrites only its own section of docs/benchmarks.md,
and best_time keeps the best round."""
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_harness.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("_harness", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_update_docs_replaces_only_its_own_section(harness, tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## MoE\n\nold moe\n\n## Generation\n\nold gen\n\n### Memory\n\nold mem\n")
    harness.update_docs("## MoE\n\nnew moe\n", str(path))
    harness.update_docs("## Generation\n\nnew gen\n\n### Memory\n\nnew mem\n", str(path))
    harness.update_docs("## Training\n\nnew train\n", str(path))
    assert path.read_text() == ("# Benchmarks\n\n## MoE\n\nnew moe\n\n## Generation\n\nnew gen\n\n### Memory\n\n"
                                "new mem\n\n## Training\n\nnew train\n")
    with pytest.raises(ValueError, match="'## ' heading"):
        harness.update_docs("no heading\n", str(path))


def test_best_time_keeps_the_best_round_and_syncs_the_result(harness, monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    synced = []

    class Result:
        def asnumpy(self):
            synced.append(True)

    calls = []
    assert harness.best_time(lambda: calls.append(1) or (Result(), 0), rounds=3, inner=1) == 1.0
    assert len(calls) == 4 and len(synced) == 3  # a warm-up call, then one per round, each synced
    times = {}
    harness.keep_best(times, "a", 2.0)
    harness.keep_best(times, "a", 3.0)
    assert times == {"a": 2.0}


def test_rss_and_machine(harness):
    # two counters of the kernel's (statm pages, ru_maxrss KiB) that agree to a few percent, in MB not bytes
    current, peak = harness.current_rss_mb(), harness.peak_rss_mb()
    assert 10 < current < peak * 1.1 and peak < 100_000
    assert harness.machine().startswith(f"{__import__('os').cpu_count()}-core CPU (")


def test_machine_names_the_instruction_sets_the_cpu_reports(harness):
    # the kernels are built -march=native: a table's machine line says which vector units it ran on
    with open("/proc/cpuinfo") as f:
        reported = next((line.split(":", 1)[1].split() for line in f if line.startswith(("flags", "Features"))), [])
    expected = [flag for flag in harness.ISA_FLAGS if flag in reported]
    assert harness.cpu_flags() == expected
    assert harness.machine().endswith(f"; {' '.join(expected) or 'no AVX2'})")
