"""pass@k against the reference formula; the sandboxed runner kills runaway programs at their timeout."""
import json
import math
import os
import shutil
import subprocess
import time

import pytest

from mindformers_hf.evaluation import estimate_pass_at_k, pass_at_k, run_humaneval, run_program


@pytest.mark.parametrize("n,c,k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (200, 17, 10), (200, 17, 100), (5, 5, 2),
                                   (7, 2, 6), (1, 1, 1)])
def test_pass_at_k_is_the_reference_formula(n, c, k):
    want = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_estimate_pass_at_k_per_problem_and_errors():
    got = estimate_pass_at_k([3, 4], [1, 0], 2)
    assert got.tolist() == pytest.approx([1 - math.comb(2, 2) / math.comb(3, 2), 0.0])
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(3, 4, 1)


def unprivileged():
    """RLIMIT_NPROC does not bind root: as root, run as `nobody` with an interpreter it can read."""
    if os.geteuid() != 0:
        return {}
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run(["id", "nobody"], capture_output=True).returncode != 0:
        pytest.skip("running as root without a `nobody` user or a system python3: a fork bomb cannot be bounded")
    return {"user": "nobody", "python": python}


def test_infinite_loop_is_killed_at_the_timeout():
    start = time.monotonic()
    assert run_program("while True:\n    pass\n", timeout=1.0) == {"passed": False, "result": "timed out"}
    assert time.monotonic() - start < 8


def test_fork_bomb_is_killed_at_the_timeout():
    kwargs = unprivileged()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    assert run_program(bomb, timeout=1.5, max_processes=8, **kwargs) == {"passed": False, "result": "timed out"}
    assert time.monotonic() - start < 10
    if kwargs:  # no process of the group is left running (killed ones may linger as zombies until reaped)
        for _ in range(50):
            states = subprocess.run(["ps", "-u", "nobody", "-o", "stat="], capture_output=True, text=True).stdout
            if all(state.startswith("Z") for state in states.split()):
                break
            time.sleep(0.1)
        assert all(state.startswith("Z") for state in states.split()), states


def test_humaneval_runner_reports_each_sample(tmp_path):
    problems = [
        {"task_id": "t/0", "prompt": "def add(a, b):\n", "entry_point": "add",
         "test": "def check(f):\n    assert f(2, 3) == 5\n"},
        {"task_id": "t/1", "prompt": "def neg(x):\n", "entry_point": "neg",
         "test": "def check(f):\n    assert f(4) == -4\n"},
    ]
    samples = [("t/0", "    return a + b\n"), ("t/0", "    return a - b\n"), ("t/0", "    return (\n"),
               ("t/1", "    return -x\n"), ("t/1", "    while True:\n        pass\n")]
    problem_file, sample_file = tmp_path / "problems.jsonl", tmp_path / "samples.jsonl"
    problem_file.write_text("".join(json.dumps(p) + "\n" for p in problems))
    sample_file.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in samples))

    with pytest.raises(PermissionError, match="allow_code_execution=True"):
        run_humaneval(problem_file, sample_file)
    metrics, results = run_humaneval(problem_file, sample_file, k=(1, 2, 3), allow_code_execution=True,
                                     timeout=1.0)
    assert [r["passed"] for r in results] == [True, False, False, True, False]
    assert "AssertionError" in results[1]["result"] and "SyntaxError" in results[2]["result"]
    assert results[4]["result"] == "timed out"
    assert metrics["pass@1"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics["pass@2"] == pytest.approx((pass_at_k(3, 1, 2) + pass_at_k(2, 1, 2)) / 2)
    assert "pass@3" not in metrics  # t/1 has only two samples
