"""`mindformers-hf launch` past one machine, on 127.0.0.1: two machines as two launcher invocations, a killed
worker with --max_restarts, a machine that never joins. Every launch costs ~10 s of msrun startup: few tests,
each checking several things, all on one tiny LLaMA (hidden 32, 2 layers) and tests/trainer/dp_train_script.py
(an HF Trainer script with only the import changed)."""
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mindformers_hf.safetensors_io import SafetensorsFile

from ..conftest import make_hf_checkpoint

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "..", "trainer", "dp_train_script.py")
KILL = os.path.join(HERE, "kill_rank_script.py")
pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _env():
    src = os.path.abspath(os.path.join(HERE, "..", "..", "src"))
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _launch(*argv):
    return [sys.executable, "-m", "mindformers_hf.commands.cli", "launch", *map(str, argv)]


def _weights(folder):
    reader = SafetensorsFile(os.path.join(folder, "model.safetensors"))
    return {k: np.array(reader.get(k)) for k in reader.keys()}


def _logs(folder):
    return {int(re.search(r"(\d+)\.log$", p).group(1)): open(p).read() for p in glob.glob(f"{folder}/worker_*.log")}


def _assert_equal_weights(ours, reference, start):
    assert ours.keys() == reference.keys()
    for key in reference:
        rel = np.abs(ours[key] - reference[key]).max() / max(np.abs(reference[key]).max(), 1e-12)
        assert rel <= 1e-5, (key, rel)
    assert max(np.abs(reference[k] - start[k]).max() for k in start) > 1e-3  # 3 steps moved the weights


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process on the global batch of 4 (2 ranks x 2), 3 AdamW steps: what every run here must end with."""
    root = tmp_path_factory.mktemp("cluster")
    model_dir = make_hf_checkpoint(str(root / "tiny"), hidden_size=32, intermediate_size=64)
    single = subprocess.run([sys.executable, SCRIPT, model_dir, str(root / "single"), "4"], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    return root, model_dir, _weights(root / "single"), _weights(model_dir)


def test_two_machines_on_localhost_equal_one_process(reference):
    root, model_dir, expected, start = reference
    port = free_port()
    machines = [subprocess.Popen(
        _launch("--num_machines", 2, "--machine_rank", rank, "--main_process_ip", "127.0.0.1",
                "--main_process_port", port, "--num_processes", 2, "--join_timeout", 120,
                "--log_dir", root / f"machine{rank}", SCRIPT, model_dir, root / "two_machines", 2),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [m.communicate(timeout=600) for m in machines]
    for rank, (m, (_, err)) in enumerate(zip(machines, outputs)):
        assert m.returncode == 0, (rank, err[-3000:])
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


def test_a_killed_worker_stops_the_job_and_max_restarts_resumes_from_the_last_checkpoint(reference):
    root, model_dir, expected, start = reference
    logs, out = root / "restart_logs", root / "restarted"
    # rank 1 is SIGKILLed as step 3 begins (after checkpoint-2), in the first attempt only
    done = subprocess.run(_launch("--num_processes", 2, "--main_process_port", free_port(), "--max_restarts", 1,
                                  "--log_dir", logs, KILL, 1, 2, SCRIPT, model_dir, out, 2, "last"),
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    # the first attempt stopped, and the launcher named the killed worker and its log (kept in attempt_0/)
    first = logs / "attempt_0"
    assert "the job failed" in done.stderr
    assert f"rank 1 failed first (killed by signal SIGKILL); its log: {first / 'worker_1.log'}" in done.stderr
    assert "KILLING rank=1 at the start of step 3" in done.stderr  # the log's last lines are shown
    assert "restarting the job (1 of 1 restarts)" in done.stderr
    failed = _logs(first)
    assert "RESUMING_FROM rank=0 checkpoint=None" in failed[0]
    assert len(re.findall(r"'loss'", failed[0])) == 2  # msrun stopped rank 0 in step 3
    # the rerun found checkpoint-2 (run_clm's get_last_checkpoint), took step 3 only and ended as one
    # uninterrupted process
    rerun = _logs(logs)
    for rank in (0, 1):
        assert f"RESUMING_FROM rank={rank} checkpoint={out / 'checkpoint-2'}" in rerun[rank]
    assert len(re.findall(r"'loss'", rerun[0])) == 1
    _assert_equal_weights(_weights(out), expected, start)


def test_a_machine_that_never_joins_fails_the_other_within_the_timeout_naming_it(tmp_path):
    # the cluster forms when the script joins it (the Trainer does, on its first collective; here init())
    script = tmp_path / "joins.py"
    script.write_text("from mindspore.communication import init\ninit()\nraise SystemExit('init() returned')\n")
    began = time.monotonic()
    # machine 0 whose machine 1 never comes (accelerate's --rdzv_conf timeout=N; --max_restarts does not retry
    # a timeout), and, at the same time, a machine 1 whose machine 0 never comes (--join_timeout N)
    alone = {rank: subprocess.Popen(
        _launch("--num_machines", 2, "--machine_rank", rank, "--num_processes", 2, "--main_process_port",
                free_port(), *(("--rdzv_conf", "timeout=10", "--max_restarts", 1) if rank == 0 else
                               ("--join_timeout", 10)),
                "--log_dir", tmp_path / f"logs{rank}", script),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)}
    errors = {rank: p.communicate(timeout=300)[1] for rank, p in alone.items()}
    elapsed = time.monotonic() - began
    assert alone[0].returncode != 0 and alone[1].returncode != 0
    assert ("the cluster did not form within 10 s (--join_timeout): machine_rank 1 (rank 1) never joined"
            in errors[0]), errors[0][-3000:]
    assert ("the cluster did not form within 10 s (--join_timeout): this machine (machine_rank 1, rank 1) "
            "waited for the main process at 127.0.0.1:") in errors[1], errors[1][-3000:]
    assert "init() returned" not in errors[0] + errors[1]
    assert "restarting the job" not in errors[0]  # as torchrun: a cluster that did not form is not retried
    assert elapsed < 150, elapsed  # the timeout plus msrun's startup, not the 600 s default
