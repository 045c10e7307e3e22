"""The data-parallel jobs of the suite in ONE 2-process launch and ONE plain process (each msrun launch costs
~10-20 s of startup): the workers run every scenario in turn (scenarios.py) and each test asserts on its own
scenario's part of the logs and its output folder, so a failing scenario fails only its tests.

    jobs = run_dp_jobs(root)                   # once per session (tests/conftest.py: the dp_jobs fixture)
    jobs.launched("dp")      -> {rank: log}    # the scenario's lines in each worker's log (final attempt)
    jobs.single("dp")        -> str            # its lines in the one-process run's output
    jobs.root / "dp"                           # its output folder

The launch (`--num_processes 2 --max_restarts 1`): attempt 0 runs "restart" (train_script.py "last" under
tests/commands/kill_rank_script.py: rank 1 SIGKILLed as step 3 begins) and dies there; attempt 1 runs every scenario:
  restart     resumes from the checkpoint-2 attempt 0 left (tests/commands/test_launch_cluster.py)
  accelerate  accelerate's loop, dp_accelerate_script.py (tests/accelerate/test_accelerator.py)
  dp          train_script.py, 3 steps on batches of 2 per rank (tests/trainer/test_data_parallel.py)
  dp_resume   a copy of dp's checkpoint-2, resumed with resume_from_checkpoint=True (test_data_parallel.py)
The one-process references (batches of 4, the same global batch), while the launch starts: dp_single,
cluster_single (the restart's and the two-machine test's model: hidden 32) and accelerate_single.
"""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "scenarios.py")
SCRIPT = os.path.join(HERE, "train_script.py")
ACCELERATE_SCRIPT = os.path.join(TESTS, "accelerate", "dp_accelerate_script.py")
KILL = os.path.join(TESTS, "commands", "kill_rank_script.py")
TIMEOUT = 900


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def script_env():
    src = os.path.join(TESTS, "..", "src")
    return {**os.environ, "PYTHONPATH": os.path.abspath(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def worker_logs(folder):
    return {int(re.search(r"(\d+)\.log$", p).group(1)): open(p, errors="replace").read()
            for p in glob.glob(f"{folder}/worker_*.log")}


def scenario_logs(text):
    """{scenario: (its lines, "end" | "failed" | "unfinished")} of one process's output."""
    out = {}
    for match in re.finditer(r"^SCENARIO_BEGIN (\S+)\n(.*?)(?=^SCENARIO_BEGIN |\Z)", text, re.S | re.M):
        name, body = match.groups()
        status = ("end" if re.search(rf"^SCENARIO_END {name}$", body, re.M) else
                  "failed" if re.search(rf"^SCENARIO_FAILED {name}$", body, re.M) else "unfinished")
        out[name] = body, status
    return out


class DPJobs:
    def __init__(self, root, launch, launch_logs, attempt0_logs, single_out, port):
        self.root, self.launch, self.port = root, launch, port
        self.launch_logs, self.attempt0_logs, self.single_out = launch_logs, attempt0_logs, single_out

    def _describe(self):
        return (f"launch exit code {self.launch.returncode}; stderr:\n{self.launch.stderr[-3000:]}\n"
                + "\n".join(f"--- worker {r}\n{t[-3000:]}" for r, t in sorted(self.launch_logs.items())))

    def launched(self, name):
        """{rank: the scenario's lines} of the launch's final attempt; fails (this test only) unless every rank
        ended it."""
        logs = {}
        for rank, text in self.launch_logs.items():
            body, status = scenario_logs(text).get(name, ("", "not started"))
            if status != "end":
                pytest.fail(f"scenario {name!r} {status} on rank {rank}:\n{body[-4000:]}\n{self._describe()}")
            logs[rank] = body
        if sorted(logs) != [0, 1]:
            pytest.fail(f"scenario {name!r}: worker logs of ranks {sorted(logs)}\n{self._describe()}")
        return logs

    def single(self, name):
        body, status = scenario_logs(self.single_out).get(name, ("", "not started"))
        if status != "end":
            pytest.fail(f"one-process scenario {name!r} {status}:\n{body[-4000:]}\n{self.single_out[-3000:]}")
        return body


def _plan(path, scenarios):
    with open(path, "w") as f:
        json.dump([{"name": n, "argv": [str(a) for a in argv], **extra} for n, argv, *rest in scenarios
                   for extra in [rest[0] if rest else {}]], f)
    return str(path)


def run_dp_jobs(root):
    if shutil.which("msrun") is None:
        pytest.skip("msrun (MindSpore's launcher) is not on PATH")
    from tests.conftest import make_hf_checkpoint

    root = Path(root)
    tiny = make_hf_checkpoint(str(root / "tiny"))
    tiny32 = make_hf_checkpoint(str(root / "tiny32"), hidden_size=32, intermediate_size=64)
    acc = make_hf_checkpoint(str(root / "acc_ckpt"), seed=4)  # test_accelerator.py's `folder`
    single_plan = _plan(root / "single.json", [
        ("dp_single", [SCRIPT, tiny, root / "single", 4]),
        ("cluster_single", [SCRIPT, tiny32, root / "cluster_single", 4]),
        ("accelerate_single", [ACCELERATE_SCRIPT, acc, root / "acc_single"])])
    launch_plan = _plan(root / "launch.json", [
        ("restart", [KILL, 1, 2, SCRIPT, tiny32, root / "restarted", 2, "last"]),
        ("accelerate", [ACCELERATE_SCRIPT, acc, root / "acc_dp"]),
        ("dp", [SCRIPT, tiny, root / "dp", 2]),
        ("dp_resume", [SCRIPT, tiny, root / "dp_resumed", 2, "resume"],
         {"copy": [str(root / "dp" / "checkpoint-2"), str(root / "dp_resumed" / "checkpoint-2")]})])
    with open(root / "single.out", "w") as out:  # started first: msrun's startup is mostly waiting
        single = subprocess.Popen([sys.executable, RUNNER, single_plan], env=script_env(), stdout=out,
                                  stderr=subprocess.STDOUT)
    port = free_port()
    logs = root / "logs"
    try:
        launch = subprocess.run(
            [sys.executable, "-m", "mindformers_hf.commands.cli", "launch", "--num_processes", "2",
             "--main_process_port", str(port), "--max_restarts", "1", "--log_dir", str(logs), RUNNER, launch_plan],
            env=script_env(), capture_output=True, text=True, timeout=TIMEOUT)
        single.wait(timeout=TIMEOUT)
    finally:
        if single.poll() is None:
            single.kill()
            single.wait()
    with open(root / "single.out") as f:
        single_out = f.read()
    return DPJobs(root, launch, worker_logs(logs), worker_logs(logs / "attempt_0"), single_out, port)
