"""One msrun worker of tests/parallel/tp_matrix.py: load every row's folder with tensor parallelism, run a fixed
batch, save what the test compares.

argv: out_dir, holding rows.json ({row name: {"folder", "plan", "auto_class", "batch"}}) and batch.npz (the
shared batch; a row's "batch", when not null, is its own npz: ids, mask and the model's extra inputs, images). For each row, in the order given,
every rank writes into out_dir/<row>/: its logits, greedy tokens, loss gradients, the slice of the full tensor each
sharded parameter holds, and load byte counts; a row that raises writes error_rank<r>.txt (its traceback) instead,
and the loop goes on with the next row. plan: "auto", "auto+vocab" (the config's plan plus a vocab-parallel
embedding) or a dict plan.
"""
import json
import os
import sys
import time
import traceback

import mindspore as ms
import numpy as np

import mindformers_hf
from mindformers_hf import AutoConfig
from mindformers_hf.parallel import init_tensor_parallel
from mindformers_hf.weight_loading import weight_loaders


def extra_inputs(batch):
    """The batch's inputs beside input_ids and attention_mask (a VL row's images), as the model takes them."""
    return {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}


def generate_inputs(batch):
    """The greedy prompt: the batch's first row, with the extra inputs (per-token ones sliced to that row; the others,
    a VL batch's images, must all belong to it)."""
    shape = batch["input_ids"].shape
    extras = {k: v[:1] if v.shape[:2] == shape else v for k, v in extra_inputs(batch).items()}
    return dict(input_ids=batch["input_ids"][:1], **extras)


def loss_grads(model, batch, with_logits=False):
    """{parameter name: gradient of the causal-LM loss} for this rank's parameters (labels = ids, pads -100);
    with_logits: (the forward's logits, that dict), from the one forward."""
    names, params = zip(*model.parameters_and_names())
    ids, mask = ms.Tensor(batch["input_ids"]), ms.Tensor(batch["attention_mask"])
    labels = ms.Tensor(np.where(batch["attention_mask"] == 1, batch["input_ids"], -100))
    extras = extra_inputs(batch)

    def loss_fn(ids, mask, labels):
        out = model(input_ids=ids, attention_mask=mask, labels=labels, **extras)
        return out.loss, out.logits

    (_, logits), grads = ms.value_and_grad(loss_fn, None, list(params), has_aux=True)(ids, mask, labels)
    grads = {name: grad.asnumpy() for name, grad in zip(names, grads)}
    return (logits.asnumpy(), grads) if with_logits else grads


def resolve_plan(folder, plan):
    if plan == "auto+vocab":  # keys as resolve_tp_plan writes them: relative to the with-head model
        base = AutoConfig.from_pretrained(folder).base_model_tp_plan
        return {**{"model." + k: v for k, v in base.items()}, "model.embed_tokens": "embedding_rowwise"}
    return plan


def shard_slices(model):
    """{parameter name: (dim, ranges) or None (whole)} of every parameter a parallel layer owns."""
    slices, params = {}, dict(model.parameters_and_names())
    for name, (cell, _) in weight_loaders(model).items():
        spec = cell.slice_of(params[name])
        slices[name] = None if spec is None else [spec[0], [list(r) for r in spec[1]]]
    return slices


def run_row(folder, plan, batch, out, auto_class="AutoModelForCausalLM"):
    seconds, start = {}, time.perf_counter()

    def lap(phase):
        nonlocal start
        now = time.perf_counter()
        seconds[phase], start = round(now - start, 3), now

    model = getattr(mindformers_hf, auto_class).from_pretrained(folder, tp_plan=resolve_plan(folder, plan))
    rank = model.tp_mesh.rank
    lap("load")
    logits, grads = loss_grads(model, batch, with_logits=True)  # logits and gradients from one forward
    np.save(os.path.join(out, f"logits_rank{rank}.npy"), logits)
    np.savez(os.path.join(out, f"grads_rank{rank}.npz"), **grads)
    lap("forward_backward")
    tokens = model.generate(**generate_inputs(batch), max_new_tokens=4, do_sample=False)
    np.save(os.path.join(out, f"tokens_rank{rank}.npy"), np.asarray(tokens))
    lap("generate")
    with open(os.path.join(out, f"stats_rank{rank}.json"), "w") as f:
        json.dump({**model.tp_load_stats, "world": model.tp_mesh.size, "slices": shard_slices(model),
                   "seconds": seconds}, f)


def main(out_dir):
    mesh = init_tensor_parallel()
    with open(os.path.join(out_dir, "rows.json")) as f:
        rows = json.load(f)
    shared = dict(np.load(os.path.join(out_dir, "batch.npz")))
    for name, spec in rows.items():
        out = os.path.join(out_dir, name)
        os.makedirs(out, exist_ok=True)
        try:
            batch = dict(np.load(spec["batch"])) if spec["batch"] else shared
            run_row(spec["folder"], spec["plan"], batch, out, spec["auto_class"])
        except Exception:  # this row's failure, reported by the test; the other rows still run
            with open(os.path.join(out, f"error_rank{mesh.rank}.txt"), "w") as f:
                f.write(traceback.format_exc())


if __name__ == "__main__":
    main(sys.argv[1])
