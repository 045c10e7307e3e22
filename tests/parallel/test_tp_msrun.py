"""tp=2 across two processes started by msrun: logits equal the single-process model's and HF's, each rank
reads only its slices of the sharded tensors, greedy decoding matches and gradients are the slices of the
single-process ones. Families: LLaMA, Qwen2 (tied, vocab-parallel embedding), Qwen2-MoE (stacked experts) and
the ChatGLM and InternLM2 remote formats (renaming tables, fused qkv and gate_up, a permuted wqkv), all through
the one loading pipeline."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.parallel import TPMesh, apply_tensor_parallel, resolve_tp_plan
from mindformers_hf.parallel.layers import _read
from mindformers_hf.parallel.loading import ArraySource, _sharded_layers
from tests.conftest import make_hf_checkpoint, hf_forward
from tests.parallel.tp_worker import loss_grads

WORKER = os.path.join(os.path.dirname(__file__), "tp_worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_tp2(folder, out_dir, plan):
    if shutil.which("msrun") is None:
        pytest.skip("msrun (MindSpore's launcher) is not on PATH")
    log_dir = os.path.join(out_dir, "logs")
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}",
           f"--log_dir={log_dir}", "--join=True", WORKER, str(folder), str(out_dir), plan]
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([os.path.abspath(src), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        logs = "".join(open(os.path.join(log_dir, f)).read()[-3000:] for f in sorted(os.listdir(log_dir)))
        pytest.fail(f"msrun failed ({result.returncode}):\n{result.stdout[-2000:]}\n{logs}")


def _checkpoint(tmp_path, family):
    """(folder, HF oracle (ids, mask) -> logits) of a tiny random checkpoint of `family`."""
    if family in ("chatglm", "internlm2"):  # remote formats: renaming tables, fused qkv with 2 KV groups; ChatGLM
        # also fused gate_up, InternLM2 a grouped wqkv (rows permuted at load) and an o_proj bias (added once)
        from tests.models import test_remote_formats as remote

        folder, _, hf = getattr(remote, f"{family}_checkpoint")(tmp_path / family)
        return folder, lambda ids, mask: remote.hf_forward(hf, ids, mask).logits.numpy()
    config, cls, extra = {
        "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
        # tied embeddings, so the vocab-parallel embedding also serves as the parallel LM head
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
        # experts stacked at load (per-expert keys in the file), gated shared expert, one dense layer
        "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                      dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                           shared_expert_intermediate_size=48, norm_topk_prob=True, mlp_only_layers=[0])),
    }[family]
    folder = make_hf_checkpoint(tmp_path / family, config, cls, **extra)
    return folder, lambda ids, mask: hf_forward(folder, ids, mask).logits.numpy()


@pytest.mark.parametrize("family,plan", [("llama", "auto"), ("qwen2", "auto+vocab"), ("qwen2_moe", "auto"),
                                         ("chatglm", "auto"), ("internlm2", "auto")])
def test_tp2_matches_single_process_and_hf(tmp_path, family, plan):
    folder, hf_logits = _checkpoint(tmp_path, family)
    rng = np.random.default_rng(0)
    input_ids = rng.integers(3, 128, size=(2, 7)).astype(np.int64)
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, :2] = 0  # left padding on one row
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    np.savez(out_dir / "batch.npz", input_ids=input_ids, attention_mask=attention_mask)
    _run_tp2(folder, str(out_dir), plan)

    single = AutoModelForCausalLM.from_pretrained(folder)
    ours = np.asarray(single(input_ids=input_ids, attention_mask=attention_mask).logits)
    hf = hf_logits(input_ids, attention_mask)
    keep = attention_mask.astype(bool)  # padded positions are not compared (HF fills them differently)
    tokens = np.asarray(single.generate(input_ids[:1], max_new_tokens=4, do_sample=False))
    full_grads = loss_grads(single, {"input_ids": input_ids, "attention_mask": attention_mask})
    for rank in range(2):
        tp = np.load(out_dir / f"logits_rank{rank}.npy")
        assert tp.shape == ours.shape
        assert np.abs(tp - ours)[keep].max() <= 1e-5
        assert np.abs(tp - hf)[keep].max() <= 1e-4
        np.testing.assert_array_equal(np.load(out_dir / f"tokens_rank{rank}.npy"), tokens)
        stats = json.loads((out_dir / f"stats_rank{rank}.json").read_text())
        assert stats["world"] == 2
        # each rank read only its half of every sharded tensor (2 KV heads over 2 ranks: none replicated)
        assert 0 < stats["sharded_bytes_read"] < 0.6 * stats["sharded_bytes_in_file"]
        _assert_grads_are_slices(folder, plan, rank, np.load(out_dir / f"grads_rank{rank}.npz"), full_grads)


def _assert_grads_are_slices(folder, plan, rank, got, full_grads):
    """Narrow each full gradient with the ranges rank `rank`'s layers hold (built here without collectives)."""
    shard = AutoModelForCausalLM.from_pretrained(folder)
    tp_plan = resolve_tp_plan(shard, "auto")
    if plan == "auto+vocab":
        tp_plan["model.embed_tokens"] = "embedding_rowwise"
    apply_tensor_parallel(shard, TPMesh(rank, 2), tp_plan)
    owners = _sharded_layers(shard)
    assert sorted(got.files) == sorted(full_grads)
    for name, want in full_grads.items():
        layer = owners.get(name)
        if layer is not None:
            if hasattr(layer, "row_ranges"):
                want = _read(ArraySource(want), 0, layer.row_ranges)
            elif hasattr(layer, "col_range"):
                want = want if name.endswith("bias") else _read(ArraySource(want), 1, [layer.col_range])
            elif hasattr(layer, "inter_range"):  # stacked experts: each expert's gate/up rows, down columns
                (a, b), inter = layer.inter_range, layer.full_inter
                want = (_read(ArraySource(want), 1, [(a, b), (inter + a, inter + b)]) if name.endswith("gate_up_proj")
                        else _read(ArraySource(want), 2, [(a, b)]))
            else:
                want = _read(ArraySource(want), 0, [(layer.vocab_start, layer.vocab_end)])
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-6, err_msg=f"rank {rank} grad of {name}")
