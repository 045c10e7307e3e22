"""Data parallel through `mindformers-hf launch`: 2 processes on a global batch train exactly as one process
on the same global batch (HF's average_tokens_across_devices normalisation), and only rank 0 writes."""
import glob
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from mindformers_hf.safetensors_io import SafetensorsFile

from ..conftest import make_hf_checkpoint

SCRIPT = os.path.join(os.path.dirname(__file__), "dp_train_script.py")
pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _env():
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    return {**os.environ, "PYTHONPATH": os.path.abspath(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _weights(folder):
    reader = SafetensorsFile(os.path.join(folder, "model.safetensors"))
    return {k: np.array(reader.get(k)) for k in reader.keys()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    model_dir = make_hf_checkpoint(str(root / "tiny"))
    single = subprocess.run([sys.executable, SCRIPT, model_dir, str(root / "single"), "4"], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    worker_logs = _launch(root / "logs", model_dir, root / "dp", port=port)
    return root, single, worker_logs, port


def _launch(logs, model_dir, output_dir, *extra, port=None):
    launched = subprocess.run(
        [sys.executable, "-m", "mindformers_hf.commands.cli", "launch", "--num_processes", "2",
         "--main_process_port", str(port or free_port()), "--log_dir", str(logs), SCRIPT, model_dir,
         str(output_dir), "2", *extra], env=_env(), capture_output=True, text=True, timeout=600)
    worker_logs = {int(re.search(r"(\d+)\.log$", p).group(1)): open(p).read()
                   for p in glob.glob(str(logs / "worker_*.log"))}
    assert launched.returncode == 0, launched.stderr[-3000:] + "\n".join(worker_logs.values())[-3000:]
    return worker_logs


def test_dp2_equals_one_process_on_the_global_batch(runs):
    root = runs[0]
    ours, reference = _weights(root / "dp"), _weights(root / "single")
    assert ours.keys() == reference.keys()
    for key in reference:
        rel = np.abs(ours[key] - reference[key]).max() / max(np.abs(reference[key]).max(), 1e-12)
        assert rel <= 1e-5, (key, rel)
    # the weights moved: equality is not "nothing happened"
    start = _weights(root / "tiny")
    assert max(np.abs(reference[k] - start[k]).max() for k in start) > 1e-3


def test_both_ranks_end_with_the_same_weights_and_only_rank0_logs(runs):
    _, single, worker_logs, _ = runs
    assert sorted(worker_logs) == [0, 1]
    digests = {}
    for rank, text in worker_logs.items():
        match = re.search(r"WEIGHTS_DIGEST rank=(\d) world=2 value=(\S+)", text)
        assert match, text[-2000:]
        digests[int(match.group(1))] = float(match.group(2))
    assert digests[0] == digests[1]
    assert "'loss'" in worker_logs[0] and "'loss'" not in worker_logs[1]
    # the logged (rank-averaged) losses equal the single process's
    single_losses = [float(m) for m in re.findall(r"'loss': '?([0-9.]+)", single.stdout)]
    dp_losses = [float(m) for m in re.findall(r"'loss': '?([0-9.]+)", worker_logs[0])]
    assert len(single_losses) == 3
    np.testing.assert_allclose(dp_losses, single_losses, rtol=1e-4)


def test_only_rank0_writes(runs):
    worker_logs = runs[2]
    assert "SHOULD_SAVE rank=0 value=True" in worker_logs[0]
    assert "SHOULD_SAVE rank=1 value=False" in worker_logs[1]


def test_dp2_resume_from_a_checkpoint_equals_the_uninterrupted_run(runs):
    root = runs[0]
    # rank 0 wrote checkpoint-2 during the 3-step run; a new 2-rank job resumes from it and takes step 3
    assert sorted(os.listdir(root / "dp" / "checkpoint-2"))
    shutil.copytree(root / "dp" / "checkpoint-2", root / "dp_resumed" / "checkpoint-2")
    worker_logs = _launch(root / "logs_resumed", str(root / "tiny"), root / "dp_resumed", "resume")
    assert "WEIGHTS_DIGEST rank=1 world=2" in worker_logs[1]
    # it took step 3 only (a run from scratch would also end equal: the count shows it resumed), with the loss
    # the uninterrupted run logged at step 3
    resumed_losses = re.findall(r"'loss': '?([0-9.]+)", worker_logs[0])
    full_losses = re.findall(r"'loss': '?([0-9.]+)", runs[2][0])
    assert len(resumed_losses) == 1 and len(full_losses) == 3
    assert resumed_losses[0] == full_losses[2]
    resumed, uninterrupted = _weights(root / "dp_resumed"), _weights(root / "dp")
    for key in uninterrupted:
        np.testing.assert_allclose(resumed[key], uninterrupted[key], rtol=0, atol=1e-6, err_msg=key)


def test_workers_see_torchruns_environment(runs):
    # the script asserts RANK / WORLD_SIZE / LOCAL_RANK equal TrainingArguments' world_size, process_index and
    # local_process_index; here: the values, and that they are the ranks MindSpore's communication gave
    _, _, worker_logs, port = runs
    for rank in (0, 1):
        line = re.search(r"LAUNCH_ENV .*", worker_logs[rank]).group(0)
        assert line == (f"LAUNCH_ENV rank={rank} comm_rank={rank} comm_size=2 WORLD_SIZE=2 LOCAL_RANK={rank} "
                        f"LOCAL_WORLD_SIZE=2 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT={port}"), line
    # msrun's scheduler process serves the job and never runs the script
    assert "LAUNCH_ENV" not in open(runs[0] / "logs" / "scheduler.log").read()


def test_rank0_only_save_model_does_not_wait_for_the_others(runs):
    # `if trainer.is_world_process_zero(): trainer.save_model(out)`: rank 1 leaves at once, rank 0 saves alone
    root, _, worker_logs, _ = runs
    assert "RANK0_SAVED" in worker_logs[0] and "RANK0_SAVED" not in worker_logs[1]
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(root / "dp" / "rank0_only"))
    theirs = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    ours = _weights(root / "dp")  # what all ranks' save_model wrote at the same point
    for key in ours:
        np.testing.assert_array_equal(theirs[key], ours[key], err_msg=key)


def test_main_process_first_lets_rank0_through_first(runs):
    # TrainingArguments.main_process_first (run_clm wraps its dataset map in it): rank 1 enters the block only
    # after rank 0 has left it (transformers' own version needs torch.distributed and fails here)
    worker_logs = runs[2]
    times = {(kind, rank): float(re.search(rf"MAIN_FIRST_{kind} rank={rank} t=(\S+)", worker_logs[rank]).group(1))
             for kind in ("ENTER", "LEAVE") for rank in (0, 1)}
    assert times["ENTER", 1] >= times["LEAVE", 0] > times["ENTER", 0]
