"""`mindformers-hf launch` past one machine, on 127.0.0.1: two machines as two launcher invocations, a killed
worker with --max_restarts, a machine that never joins. Every launch costs ~10 s of msrun startup: few launches,
each checking several things, all on one tiny LLaMA (hidden 32, 2 layers) and tests/trainer/train_script.py
(an HF Trainer script with only the import changed). The killed-worker launch is the session's data-parallel launch
(tests/trainer/dp_jobs.py: its first attempt dies in the "restart" scenario, the rerun runs every scenario) and the
one-process reference is its "cluster_single" scenario."""
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from ..trainer.dp_jobs import SCRIPT, free_port, scenario_logs, script_env as _env, worker_logs as _logs
from ..trainer.test_data_parallel import _weights

pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")


def _launch(*argv):
    return [sys.executable, "-m", "mindformers_hf.commands.cli", "launch", *map(str, argv)]


def _assert_equal_weights(ours, reference, start):
    assert ours.keys() == reference.keys()
    for key in reference:
        rel = np.abs(ours[key] - reference[key]).max() / max(np.abs(reference[key]).max(), 1e-12)
        assert rel <= 1e-5, (key, rel)
    assert max(np.abs(reference[k] - start[k]).max() for k in start) > 1e-3  # 3 steps moved the weights


def _popen(argv, stderr_path):
    """A background process; its stderr goes to a file (a pipe nobody reads could fill up and block it)."""
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    proc.stderr_path = stderr_path
    return proc


def _finish(procs, timeout=600):
    """{key: (exit code, stderr)} once every process has ended."""
    done = {}
    for key, proc in procs.items():
        proc.wait(timeout=timeout)
        with open(proc.stderr_path) as f:
            done[key] = proc.returncode, f.read()
    return done


@pytest.fixture(scope="module")
def reference(dp_jobs):
    """One process on the global batch of 4 (2 ranks x 2), 3 AdamW steps on the hidden-32 LLaMA: what every run here
    must end with, as (expected weights, start weights)."""
    dp_jobs.single("cluster_single")
    return _weights(dp_jobs.root / "cluster_single"), _weights(dp_jobs.root / "tiny32")


@pytest.fixture(scope="module")
def lone_machines(tmp_path_factory):
    """Two jobs whose other machine never comes, started early so that their timeouts run beside other work: a
    machine 0 without machine 1 (accelerate's --rdzv_conf timeout=N, and --max_restarts, which must not retry a
    timeout) and a machine 1 without machine 0 (--join_timeout N). The cluster forms when the script joins it
    (the Trainer does on its first collective; here init())."""
    root = tmp_path_factory.mktemp("lone")
    script = root / "joins.py"
    script.write_text("from mindspore.communication import init\ninit()\nraise SystemExit('init() returned')\n")
    began = time.monotonic()
    procs = {rank: _popen(_launch(
        "--num_machines", 2, "--machine_rank", rank, "--num_processes", 2, "--main_process_port", free_port(),
        *(("--rdzv_conf", "timeout=8", "--max_restarts", 1) if rank == 0 else ("--join_timeout", 8)),
        "--log_dir", root / f"logs{rank}", script), root / f"lone{rank}.err") for rank in (0, 1)}
    yield procs, began
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_machines_on_localhost_equal_one_process(dp_jobs, reference, lone_machines):
    root, model_dir = dp_jobs.root, str(dp_jobs.root / "tiny32")
    port = free_port()
    done = _finish({rank: _popen(_launch(
        "--num_machines", 2, "--machine_rank", rank, "--main_process_ip", "127.0.0.1", "--main_process_port", port,
        "--num_processes", 2, "--join_timeout", 120, "--log_dir", root / f"machine{rank}", SCRIPT, model_dir,
        root / "two_machines", 2), root / f"machine{rank}.err") for rank in (0, 1)})
    for rank, (code, err) in done.items():
        assert code == 0, (rank, err[-3000:])
    expected, start = reference
    _assert_equal_weights(_weights(root / "two_machines"), expected, start)
    # each machine ran one worker with accelerate's meaning of the flags: 2 processes in total, 1 per machine;
    # its global rank is node_rank * local + local index, LOCAL_RANK restarts at 0 on every machine
    for rank in (0, 1):
        logs = _logs(root / f"machine{rank}")
        assert list(logs) == [rank]
        line = re.search(r"LAUNCH_ENV .*", logs[rank]).group(0)
        assert line == (f"LAUNCH_ENV rank={rank} comm_rank={rank} comm_size=2 WORLD_SIZE=2 LOCAL_RANK=0 "
                        f"LOCAL_WORLD_SIZE=1 NODE_RANK={rank} MASTER_ADDR=127.0.0.1 MASTER_PORT={port}"), line
    # as transformers: each machine's local main process logs (log_on_each_node=True), only rank 0 saves
    assert "'loss'" in _logs(root / "machine0")[0] and "'loss'" in _logs(root / "machine1")[1]
    assert "SHOULD_SAVE rank=0 value=True" in _logs(root / "machine0")[0]
    assert "SHOULD_SAVE rank=1 value=False" in _logs(root / "machine1")[1]


def test_a_killed_worker_stops_the_job_and_max_restarts_resumes_from_the_last_checkpoint(dp_jobs, reference):
    # the session's data-parallel launch: `launch --num_processes 2 --max_restarts 1 scenarios.py`, whose first
    # scenario runs `kill_rank_script.py 1 2 train_script.py <hidden-32 LLaMA> <root>/restarted 2 last`: rank 1 is
    # SIGKILLed as step 3 begins (after checkpoint-2), in the first attempt only
    root, done = dp_jobs.root, dp_jobs.launch
    logs, out = root / "logs", root / "restarted"
    assert done.returncode == 0, done.stderr[-4000:]
    # the first attempt stopped, and the launcher named the killed worker and its log (kept in attempt_0/)
    first = logs / "attempt_0"
    assert "the job failed" in done.stderr
    assert f"rank 1 failed first (killed by signal SIGKILL); its log: {first / 'worker_1.log'}" in done.stderr
    assert "KILLING rank=1 at the start of step 3" in done.stderr  # the log's last lines are shown
    assert "restarting the job (1 of 1 restarts)" in done.stderr
    failed = {rank: scenario_logs(text)["restart"][0] for rank, text in dp_jobs.attempt0_logs.items()}
    assert sorted(scenario_logs(dp_jobs.attempt0_logs[0])) == ["restart"]  # nothing ran after the kill
    assert "RESUMING_FROM rank=0 checkpoint=None" in failed[0]
    assert len(re.findall(r"'loss'", failed[0])) == 2  # msrun stopped rank 0 in step 3
    # the rerun found checkpoint-2 (run_clm's get_last_checkpoint), took step 3 only and ended as one
    # uninterrupted process
    rerun = dp_jobs.launched("restart")
    for rank in (0, 1):
        assert f"RESUMING_FROM rank={rank} checkpoint={out / 'checkpoint-2'}" in rerun[rank]
    assert len(re.findall(r"'loss'", rerun[0])) == 1
    _assert_equal_weights(_weights(out), *reference)


def test_a_machine_that_never_joins_fails_the_other_within_the_timeout_naming_it(lone_machines):
    procs, began = lone_machines
    done = _finish(procs, timeout=300)
    elapsed = time.monotonic() - began
    assert done[0][0] != 0 and done[1][0] != 0
    errors = {rank: err for rank, (_, err) in done.items()}
    assert ("the cluster did not form within 8 s (--join_timeout): machine_rank 1 (rank 1) never joined"
            in errors[0]), errors[0][-3000:]
    assert ("the cluster did not form within 8 s (--join_timeout): this machine (machine_rank 1, rank 1) "
            "waited for the main process at 127.0.0.1:") in errors[1], errors[1][-3000:]
    assert "init() returned" not in errors[0] + errors[1]
    assert "restarting the job" not in errors[0]  # as torchrun: a cluster that did not form is not retried
    assert elapsed < 300, elapsed  # the timeout plus msrun's startup (beside the other tests' work), not 600 s
