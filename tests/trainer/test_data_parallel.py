"""Data parallel through `mindformers-hf launch`: 2 processes on a global batch train exactly as one process
on the same global batch (HF's average_tokens_across_devices normalisation), and only rank 0 writes. The runs are
scenarios of the session's one data-parallel launch (tests/trainer/dp_jobs.py): "dp" (3 steps, batches of 2 per
rank), "dp_resume" (dp's checkpoint-2 resumed) and the one-process "dp_single" (batches of 4)."""
import os
import re
import shutil

import numpy as np
import pytest

from mindformers_hf.safetensors_io import SafetensorsFile

pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")


def _weights(folder):
    reader = SafetensorsFile(os.path.join(folder, "model.safetensors"))
    return {k: np.array(reader.get(k)) for k in reader.keys()}


def test_dp2_equals_one_process_on_the_global_batch(dp_jobs):
    root = dp_jobs.root
    dp_jobs.launched("dp"), dp_jobs.single("dp_single")
    ours, reference = _weights(root / "dp"), _weights(root / "single")
    assert ours.keys() == reference.keys()
    for key in reference:
        rel = np.abs(ours[key] - reference[key]).max() / max(np.abs(reference[key]).max(), 1e-12)
        assert rel <= 1e-5, (key, rel)
    # the weights moved: equality is not "nothing happened"
    start = _weights(root / "tiny")
    assert max(np.abs(reference[k] - start[k]).max() for k in start) > 1e-3


def test_both_ranks_end_with_the_same_weights_and_only_rank0_logs(dp_jobs):
    worker_logs, single = dp_jobs.launched("dp"), dp_jobs.single("dp_single")
    assert sorted(worker_logs) == [0, 1]
    digests = {}
    for rank, text in worker_logs.items():
        match = re.search(r"WEIGHTS_DIGEST rank=(\d) world=2 value=(\S+)", text)
        assert match, text[-2000:]
        digests[int(match.group(1))] = float(match.group(2))
    assert digests[0] == digests[1]
    assert "'loss'" in worker_logs[0] and "'loss'" not in worker_logs[1]
    # the logged (rank-averaged) losses equal the single process's
    single_losses = [float(m) for m in re.findall(r"'loss': '?([0-9.]+)", single)]
    dp_losses = [float(m) for m in re.findall(r"'loss': '?([0-9.]+)", worker_logs[0])]
    assert len(single_losses) == 3
    np.testing.assert_allclose(dp_losses, single_losses, rtol=1e-4)


def test_only_rank0_writes(dp_jobs):
    worker_logs = dp_jobs.launched("dp")
    assert "SHOULD_SAVE rank=0 value=True" in worker_logs[0]
    assert "SHOULD_SAVE rank=1 value=False" in worker_logs[1]


def test_dp2_resume_from_a_checkpoint_equals_the_uninterrupted_run(dp_jobs):
    root, full_logs = dp_jobs.root, dp_jobs.launched("dp")
    # rank 0 wrote checkpoint-2 during the 3-step run; a new 2-rank run (the "dp_resume" scenario) resumes from a
    # copy of it and takes step 3
    assert sorted(os.listdir(root / "dp" / "checkpoint-2"))
    worker_logs = dp_jobs.launched("dp_resume")
    assert "WEIGHTS_DIGEST rank=1 world=2" in worker_logs[1]
    # it took step 3 only (a run from scratch would also end equal: the count shows it resumed), with the loss
    # the uninterrupted run logged at step 3
    resumed_losses = re.findall(r"'loss': '?([0-9.]+)", worker_logs[0])
    full_losses = re.findall(r"'loss': '?([0-9.]+)", full_logs[0])
    assert len(resumed_losses) == 1 and len(full_losses) == 3
    assert resumed_losses[0] == full_losses[2]
    resumed, uninterrupted = _weights(root / "dp_resumed"), _weights(root / "dp")
    for key in uninterrupted:
        np.testing.assert_allclose(resumed[key], uninterrupted[key], rtol=0, atol=1e-6, err_msg=key)


def test_workers_see_torchruns_environment(dp_jobs):
    # the script asserts RANK / WORLD_SIZE / LOCAL_RANK equal TrainingArguments' world_size, process_index and
    # local_process_index; here: the values, and that they are the ranks MindSpore's communication gave
    worker_logs, port = dp_jobs.launched("dp"), dp_jobs.port
    for rank in (0, 1):
        line = re.search(r"LAUNCH_ENV .*", worker_logs[rank]).group(0)
        assert line == (f"LAUNCH_ENV rank={rank} comm_rank={rank} comm_size=2 WORLD_SIZE=2 LOCAL_RANK={rank} "
                        f"LOCAL_WORLD_SIZE=2 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT={port}"), line
    # msrun's scheduler process serves the job and never runs the script
    assert "LAUNCH_ENV" not in open(dp_jobs.root / "logs" / "scheduler.log").read()


def test_rank0_only_save_model_does_not_wait_for_the_others(dp_jobs):
    # `if trainer.is_world_process_zero(): trainer.save_model(out)`: rank 1 goes on at once (to the next
    # scenario, whose copy step waits for rank 0 without a collective; after the last one, it leaves), rank 0
    # saves alone
    root, worker_logs = dp_jobs.root, dp_jobs.launched("dp")
    assert "RANK0_SAVED" in worker_logs[0] and "RANK0_SAVED" not in worker_logs[1]
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(root / "dp" / "rank0_only"))
    theirs = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    ours = _weights(root / "dp")  # what all ranks' save_model wrote at the same point
    for key in ours:
        np.testing.assert_array_equal(theirs[key], ours[key], err_msg=key)


def test_main_process_first_lets_rank0_through_first(dp_jobs):
    # TrainingArguments.main_process_first (run_clm wraps its dataset map in it): rank 1 enters the block only
    # after rank 0 has left it (transformers' own version needs torch.distributed and fails here)
    worker_logs = dp_jobs.launched("dp")
    times = {(kind, rank): float(re.search(rf"MAIN_FIRST_{kind} rank={rank} t=(\S+)", worker_logs[rank]).group(1))
             for kind in ("ENTER", "LEAVE") for rank in (0, 1)}
    assert times["ENTER", 1] >= times["LEAVE", 0] > times["ENTER", 0]


def test_a_failing_scenario_fails_alone(tmp_path):
    # the shared jobs' runner (scenarios.py) in one plain process: a scenario that raises is reported with its
    # traceback and fails only the tests that read it; the ones after it still run; sys.exit(0) is an end
    import subprocess
    import sys

    from .dp_jobs import RUNNER, DPJobs, _plan, scenario_logs

    scripts = {"ok": "print('first')", "bad": "raise ValueError('boom')", "after": "print('second')",
               "exits": "import sys; print('leaving'); sys.exit(0)"}
    for name, code in scripts.items():
        (tmp_path / f"{name}.py").write_text(code + "\n")
    plan = _plan(tmp_path / "plan.json", [(name, [tmp_path / f"{name}.py"]) for name in scripts])
    out = subprocess.run([sys.executable, RUNNER, plan], capture_output=True, text=True, timeout=60).stdout
    parts = scenario_logs(out)
    assert {name: status for name, (_, status) in parts.items()} == {
        "ok": "end", "bad": "failed", "after": "end", "exits": "end"}
    assert "ValueError: boom" in parts["bad"][0] and "second" in parts["after"][0]
    jobs = DPJobs(tmp_path, None, {}, {}, out, None)
    assert "first" in jobs.single("ok")
    with pytest.raises(pytest.fail.Exception, match="one-process scenario 'bad' failed"):
        jobs.single("bad")
