"""pass@k: the unbiased estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code") and an
opt-in runner for HumanEval-format JSONL.

The runner executes model-written code. It does so only with `allow_code_execution=True`, each program in its own
interpreter (`-I`: no site-packages from the environment, no cwd on sys.path) and its own session and process
group, in a fresh temporary directory, under CPU, memory, file-size and process-count rlimits, and kills the whole
group at `timeout`. This confines mistakes, not attackers: use a container or VM for untrusted models.
RLIMIT_NPROC does not bind root; as root pass `user=` (e.g. "nobody") and an interpreter that user can read.
"""
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..utils import warn_once


def pass_at_k(n, c, k):
    """Probability that at least one of k samples drawn from n (c of them correct) passes: 1 - C(n-c,k)/C(n,k),
    in the numerically stable product form."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def estimate_pass_at_k(num_samples, num_correct, k):
    """pass@k for each problem (human-eval's estimate_pass_at_k); num_samples may be one int for all."""
    num_correct = list(num_correct)
    if np.ndim(num_samples) == 0:
        num_samples = [int(num_samples)] * len(num_correct)
    return np.array([pass_at_k(int(n), int(c), k) for n, c in zip(num_samples, num_correct)])


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _limits(timeout, memory_bytes, max_processes, uid, gid):
    """Runs in the child between fork and exec: the rlimits, then the unprivileged user if asked."""
    import resource

    def apply():
        cpu = int(math.ceil(timeout)) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
    return apply


def _kill_group(pgid):
    """SIGKILL the process group until it is empty (a fork racing the signal fails: its parent is dying)."""
    for _ in range(100):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def run_program(program, timeout=3.0, memory_mb=1024, max_processes=32, python=None, user=None):
    """Run `program` in a sandboxed interpreter: {"passed": bool, "result": "passed" | "timed out" | "failed: ..."}."""
    uid = gid = None
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(int(user))
        uid, gid = entry.pw_uid, entry.pw_gid
    elif os.geteuid() == 0:
        warn_once("run_program: running as root, where RLIMIT_NPROC does not apply; a fork bomb is stopped only "
                  "by the timeout. Pass user= (e.g. 'nobody') to run completions unprivileged.")
    with tempfile.TemporaryDirectory(prefix="mindformers_hf_exec_") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        if uid is not None:
            os.chown(workdir, uid, gid)
            os.chown(path, uid, gid)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        proc = subprocess.Popen([python or sys.executable, "-I", path], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True,
                                preexec_fn=_limits(timeout, memory_mb << 20, max_processes, uid, gid))
        try:
            _, stderr = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid)  # also any children the program left behind
        if timed_out:
            proc.communicate()
            return {"passed": False, "result": "timed out"}
    if proc.returncode == 0:
        return {"passed": True, "result": "passed"}
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    reason = lines[-1] if lines else f"exit status {proc.returncode}"
    return {"passed": False, "result": f"failed: {reason}"}


def humaneval_program(problem, completion):
    """human-eval's check program: prompt + completion, the tests, then check(entry_point)."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def run_humaneval(problem_file, sample_file, k=(1, 10, 100), allow_code_execution=False, timeout=3.0,
                  memory_mb=1024, max_processes=32, num_workers=1, python=None, user=None):
    """Execute every completion of `sample_file` (JSONL: task_id, completion) against the tests of
    `problem_file` (HumanEval JSONL: task_id, prompt, test, entry_point).

    Returns ({"pass@k": mean over problems, for each k no larger than every problem's sample count},
    per-sample results in the sample file's order, each {"task_id", "completion", "passed", "result"})."""
    if not allow_code_execution:
        raise PermissionError("run_humaneval executes model-generated code; pass allow_code_execution=True "
                              "(ideally inside a container) to run it")
    problems = {p["task_id"]: p for p in _read_jsonl(problem_file)}
    samples = _read_jsonl(sample_file)
    unknown = sorted({s["task_id"] for s in samples} - set(problems))
    if unknown:
        raise ValueError(f"run_humaneval: samples for unknown task_ids {unknown[:5]}")

    def run(sample):
        outcome = run_program(humaneval_program(problems[sample["task_id"]], sample["completion"]), timeout,
                              memory_mb, max_processes, python, user)
        return {"task_id": sample["task_id"], "completion": sample["completion"], **outcome}

    with ThreadPoolExecutor(max_workers=max(1, int(num_workers))) as pool:
        results = list(pool.map(run, samples))
    totals, correct = {}, {}
    for result in results:
        totals[result["task_id"]] = totals.get(result["task_id"], 0) + 1
        correct[result["task_id"]] = correct.get(result["task_id"], 0) + int(result["passed"])
    tasks = sorted(totals)
    n = [totals[t] for t in tasks]
    c = [correct[t] for t in tasks]
    metrics = {f"pass@{kk}": float(estimate_pass_at_k(n, c, kk).mean()) for kk in k if n and min(n) >= kk}
    return metrics, results
