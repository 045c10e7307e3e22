"""Tensor parallel tp=2 for many checkpoints in ONE msrun launch (its startup, ~15 s, is most of a launch's cost).

    results = run_tp_matrix({"llama": (folder, hf_oracle, "auto"), ...}, out_dir)   # name -> result
    check_tp_row(results["llama"])                                                # asserts, per row

A row is (our folder, the HF oracle[, plan[, auto class[, batch]]]): the oracle is a folder transformers loads with
AutoModelForCausalLM (torch, fp32), or a callable (input_ids, attention_mask, **extra inputs) -> logits for references
that are not a plain folder (the remote formats' HF-native twin with an ALiBi mask, the VL models); plan is "auto"
(the default), "auto+vocab" (the config's plan plus a vocab-parallel embedding) or a dict plan; the auto class (our
name, default "AutoModelForCausalLM") is what the workers and the single-process reference load the folder with;
batch (default tp_batch()) is a dict of numpy inputs: input_ids, attention_mask and extra model inputs (a VL row's
images, all of them in the first row, which is also the greedy prompt). The workers (tp_worker.py) loop over the rows; a row that raises in a
worker is that row's failure (check_tp_row fails with its traceback), the other rows still run.

check_tp_row asserts, for both ranks: logits on a left-padded batch equal the single-process model's (1e-5) and
HF's (1e-4) at unpadded positions; 4 greedy tokens equal the single-process ones; each rank read only its half of
the sharded tensors (< 0.6x of their bytes); each rank's loss gradients are its slices of the single-process ones.
"""
import json
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "tp_worker.py")
SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "src"))
TIMEOUT = 600
AUTO_CLASS = "AutoModelForCausalLM"


def tp_batch():
    """The batch every row runs: 2 rows of 7 ids in [3, 128), the second left-padded by 2."""
    rng = np.random.default_rng(0)
    input_ids = rng.integers(3, 128, size=(2, 7)).astype(np.int64)
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, :2] = 0
    return input_ids, attention_mask


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logs(log_dir):
    if not os.path.isdir(log_dir):
        return ""
    return "".join(f"--- {f}\n" + open(os.path.join(log_dir, f), errors="replace").read()[-3000:]
                   for f in sorted(os.listdir(log_dir)))


def run_tp_matrix(rows, out_dir):
    """One msrun launch (2 workers) over every row of `rows` ({name: (our folder, HF oracle[, plan])}).

    Returns {name: result}: a dict with the row's folder, oracle, plan, output directory and "error" (None, or the
    reason this row has no results: a worker's traceback, or the launch's failure with the workers' logs).
    The launch's wall time is in every result's "launch_seconds"."""
    if shutil.which("msrun") is None:
        pytest.skip("msrun (MindSpore's launcher) is not on PATH")
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    input_ids, attention_mask = tp_batch()
    np.savez(os.path.join(out_dir, "batch.npz"), input_ids=input_ids, attention_mask=attention_mask)
    rows = {name: (row[0], row[1], row[2] if len(row) > 2 else "auto", row[3] if len(row) > 3 else AUTO_CLASS,
                   row[4] if len(row) > 4 else None) for name, row in rows.items()}
    batches = {}
    for name, row in rows.items():
        if row[4] is not None:
            batches[name] = os.path.join(out_dir, f"batch_{name}.npz")
            np.savez(batches[name], **row[4])
    with open(os.path.join(out_dir, "rows.json"), "w") as f:
        json.dump({name: {"folder": str(folder), "plan": plan, "auto_class": auto, "batch": batches.get(name)}
                   for name, (folder, _, plan, auto, _) in rows.items()}, f)
    log_dir = os.path.join(out_dir, "logs")
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}",
           f"--log_dir={log_dir}", "--join=True", WORKER, out_dir]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        launch_error = None if proc.returncode == 0 else (
            f"msrun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{_logs(log_dir)}")
    except subprocess.TimeoutExpired:
        launch_error = f"msrun timed out after {TIMEOUT} s:\n{_logs(log_dir)}"
    seconds = time.perf_counter() - start
    results = {}
    for name, (folder, oracle, plan, auto, batch) in rows.items():
        row_dir = os.path.join(out_dir, name)
        errors = [open(os.path.join(row_dir, f)).read() for f in sorted(os.listdir(row_dir))
                  if f.startswith("error_rank")] if os.path.isdir(row_dir) else []
        done = all(os.path.exists(os.path.join(row_dir, f"stats_rank{r}.json")) for r in range(2))
        error = "\n".join(errors) or (None if done else launch_error or "no result written")
        results[name] = {"name": name, "folder": str(folder), "oracle": oracle, "plan": plan, "auto_class": auto,
                         "batch": batch, "dir": row_dir,
                         "error": error, "launch_seconds": seconds}
    return results


def _hf_logits(oracle, input_ids, attention_mask, **extras):
    if callable(oracle):
        return np.asarray(oracle(input_ids, attention_mask, **extras))
    from tests.conftest import hf_forward

    return hf_forward(str(oracle), input_ids, attention_mask).logits.numpy()


def check_tp_row(result, single_atol=1e-5, hf_atol=1e-4):
    """Assert one row of run_tp_matrix against the single-process model and the HF oracle (see the module doc)."""
    import mindformers_hf
    from mindformers_hf.parallel.layers import _read
    from mindformers_hf.weight_loading import ArraySource
    from tests.parallel.tp_worker import extra_inputs, generate_inputs, loss_grads

    if result["error"]:
        pytest.fail(f"tensor parallel row {result['name']!r} failed in the workers:\n{result['error']}")
    batch = result.get("batch")
    if batch is None:
        input_ids, attention_mask = tp_batch()
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    single = getattr(mindformers_hf, result.get("auto_class", AUTO_CLASS)).from_pretrained(result["folder"])
    ours, full_grads = loss_grads(single, batch, True)
    hf = _hf_logits(result["oracle"], input_ids, attention_mask, **extra_inputs(batch))
    keep = attention_mask.astype(bool)  # padded positions are not compared (HF fills them differently)
    # op by op, as the tensor-parallel model decodes (compiling the decode step costs ~8 s a family; compiled and
    # eager decoding are compared in tests/generation)
    tokens = np.asarray(single.generate(**generate_inputs(batch), max_new_tokens=4, do_sample=False,
                                        disable_compile=True))
    row = result["dir"]
    for rank in range(2):
        tp = np.load(os.path.join(row, f"logits_rank{rank}.npy"))
        assert tp.shape == ours.shape
        assert np.abs(tp - ours)[keep].max() <= single_atol, f"rank {rank}: tp=2 logits vs single-process"
        assert np.abs(tp - hf)[keep].max() <= hf_atol, f"rank {rank}: tp=2 logits vs HF"
        np.testing.assert_array_equal(np.load(os.path.join(row, f"tokens_rank{rank}.npy")), tokens)
        with open(os.path.join(row, f"stats_rank{rank}.json")) as f:
            stats = json.load(f)
        assert stats["world"] == 2
        # each rank read only its half of every sharded tensor (2 KV heads over 2 ranks: none replicated)
        assert 0 < stats["sharded_bytes_read"] < 0.6 * stats["sharded_bytes_in_file"]
        got = np.load(os.path.join(row, f"grads_rank{rank}.npz"))
        assert sorted(got.files) == sorted(full_grads)
        for name, want in full_grads.items():
            spec = stats["slices"].get(name)
            if spec is not None:  # the rows / columns of the full tensor this rank's parameter holds
                want = _read(ArraySource(want), spec[0], [tuple(r) for r in spec[1]])
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=f"rank {rank} grad of {name}")
