"""Data x tensor mesh and ZeRO stage 1 through `mindformers-hf launch`, set from the launcher's environment as
accelerate exports it (PARALLELISM_CONFIG_TP_SIZE, ACCELERATE_DEEPSPEED_ZERO_STAGE): an unchanged HF Trainer
script ends with the weights of the one-process run when run as dp=2 x tp=2 with sharded optimizer state; each
rank reads only its slices and holds half the moments; checkpoints resume into another data-parallel size.

Three runs in all (one launch): one process (started beside the launch: msrun's startup is mostly waiting);
dp=2 x tp=2 + ZeRO-1 on 4 processes; the one-process run resumed from the mesh's checkpoint. The script is
tests/trainer/train_script.py with --mesh."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mindformers_hf.safetensors_io import SafetensorsFile

from mindformers_hf import TrainingArguments
from mindformers_hf.commands import launch as L

from ..conftest import make_hf_checkpoint
from .dp_jobs import SCRIPT, free_port, script_env as _env, worker_logs
pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")
# accelerate launch's flags for a dp x tp mesh and DeepSpeed ZeRO stage 1
MESH = ["--use_parallelism_config", "--parallelism_config_tp_size", "2"]
ZERO = ["--use_deepspeed", "--zero_stage", "1"]


def _tensors(path):
    reader = SafetensorsFile(str(path))
    return {k: np.array(reader.get(k)) for k in reader.keys()}


def _start_single(model_dir, output_dir, *extra):
    """The one-process run (batches of 4), in the background; `_finish_single` waits for its output."""
    return subprocess.Popen([sys.executable, SCRIPT, model_dir, str(output_dir), "4", *extra, "--mesh"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_single(proc):
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    return out


def _single(model_dir, output_dir, *extra):
    return _finish_single(_start_single(model_dir, output_dir, *extra))


def _launch(logs, n, flags, model_dir, output_dir, *extra):
    launched = subprocess.run(
        [sys.executable, "-m", "mindformers_hf.commands.cli", "launch", "--num_processes", str(n), *flags,
         "--main_process_port", str(free_port()), "--log_dir", str(logs), SCRIPT, model_dir, str(output_dir), "2",
         *extra, "--mesh"], env=_env(), capture_output=True, text=True, timeout=900)
    logs = worker_logs(logs)
    assert launched.returncode == 0, launched.stderr[-3000:] + "\n".join(logs.values())[-3000:]
    return logs


def _reports(text):
    return {int(m.group(1)): {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", m.group(0))}
            for m in re.finditer(r"REPORT rank=(\d+) .*", text)}


def _losses(text):
    return [float(m) for m in re.findall(r"'loss': '?([0-9.]+)", text)]


def _assert_same_weights(ours, reference, tol=1e-5):
    assert ours.keys() == reference.keys()
    for key in reference:
        rel = np.abs(ours[key] - reference[key]).max() / max(np.abs(reference[key]).max(), 1e-12)
        assert rel <= tol, (key, rel)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    model_dir = make_hf_checkpoint(str(root / "tiny"))
    single = _start_single(model_dir, root / "single")
    try:
        mesh_logs = _launch(root / "logs", 4, MESH + ZERO, model_dir, root / "mesh")
    finally:
        single = _finish_single(single)
    return root, single, mesh_logs


def test_mesh_with_zero1_equals_one_process(runs):
    root, single, mesh_logs = runs
    reference = _tensors(root / "single" / "model.safetensors")
    _assert_same_weights(_tensors(root / "mesh" / "model.safetensors"), reference)
    start = _tensors(root / "tiny" / "model.safetensors")
    assert max(np.abs(reference[k] - start[k]).max() for k in start) > 1e-3  # the weights moved
    # the loss logged by rank 0 (averaged over the data-parallel ranks only) is the one-process loss
    assert len(_losses(single)) == 3
    np.testing.assert_allclose(_losses(mesh_logs[0]), _losses(single), rtol=1e-4)
    # the whole-tensor optimizer state the mesh saved (ZeRO parts and tensor slices gathered) is the unsharded one
    theirs, ours = (_tensors(root / run / "checkpoint-2" / "optimizer.safetensors") for run in ("single", "mesh"))
    _assert_same_weights(ours, theirs, tol=1e-4)


def test_each_rank_reads_its_slices_and_holds_half_the_moments(runs):
    root, single, mesh_logs = runs
    unsharded = _reports(single)[0]
    # measured without sharding: AdamW holds two moments of every parameter
    assert unsharded["moments"] == 2 * unsharded["params"]
    reports = {}
    for rank, text in mesh_logs.items():
        reports.update(_reports(text))
    assert sorted(reports) == [0, 1, 2, 3]
    for report in reports.values():
        # tensor parallel: this rank's parameters are about half the model (the embedding and norms are whole)
        assert report["params"] < 0.6 * unsharded["params"]
        assert 0 < report["sharded_read"] <= 0.5 * report["sharded_file"]
        # ZeRO-1 over dp=2: half the moments this rank's unsharded AdamW would hold (2 x its parameters)
        assert abs(report["moments"] / (2 * report["params"]) - 0.5) < 0.01, report


def test_mesh_checkpoint_resumes_in_one_process(runs):
    # saved by dp=2 x tp=2 with ZeRO-1 at step 2, resumed by one unsharded process for step 3
    root, single, _ = runs
    shutil.copytree(root / "mesh" / "checkpoint-2", root / "one_resumed" / "checkpoint-2")
    out = _single(str(root / "tiny"), root / "one_resumed", "resume")
    assert len(_losses(out)) == 1  # it took step 3 only
    np.testing.assert_allclose(_losses(out), _losses(single)[2:], rtol=1e-4)
    _assert_same_weights(_tensors(root / "one_resumed" / "model.safetensors"),
                         _tensors(root / "single" / "model.safetensors"))


def test_zero_and_mesh_settings_are_accelerates_and_deepspeeds(tmp_path, monkeypatch):
    # the launcher exports what `accelerate launch` exports; stages other than 0/1 and meshes that do not fill
    # the processes are refused by name
    from mindformers_hf.commands.cli import build_parser

    def resolve(*argv):
        return L.resolve_launch(build_parser().parse_args(["launch", *argv, "train.py"]))

    env = L.worker_env(resolve("--num_processes", "4", *MESH, *ZERO))
    assert {k: env[k] for k in ("ACCELERATE_USE_PARALLELISM_CONFIG", "PARALLELISM_CONFIG_TP_SIZE",
                                "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE")} == {
        "ACCELERATE_USE_PARALLELISM_CONFIG": "true", "PARALLELISM_CONFIG_TP_SIZE": "2",
        "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}
    with pytest.raises(SystemExit, match="ZeRO stage 2"):
        resolve("--num_processes", "2", "--use_deepspeed")  # accelerate's default stage
    with pytest.raises(SystemExit, match="does not fit num_processes 4"):
        resolve("--num_processes", "4", "--parallelism_config_tp_size", "3")
    # TrainingArguments: DeepSpeed's config dict (or JSON file), as transformers takes it
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert TrainingArguments(str(tmp_path), deepspeed={"zero_optimization": {"stage": 1}}).zero_stage == 1
    assert TrainingArguments(str(tmp_path)).zero_stage == 0
    with pytest.raises(NotImplementedError, match="ZeRO stage 3"):
        TrainingArguments(str(tmp_path), deepspeed={"zero_optimization": {"stage": 3}})
