"""One msrun worker of test_tp_msrun.py: load `folder` with tensor parallelism, run a fixed batch, save.

argv: folder out_dir plan ("auto", or "auto+vocab": the config's plan plus a vocab-parallel embedding).
Every rank writes its logits, greedy tokens, loss gradients and load byte counts; the test compares them.
"""
import json
import os
import sys

import mindspore as ms
import numpy as np

from mindformers_hf import AutoConfig, AutoModelForCausalLM


def loss_grads(model, batch):
    """{parameter name: gradient of the causal-LM loss} for this rank's parameters (labels = ids, pads -100)."""
    names, params = zip(*model.parameters_and_names())
    ids, mask = ms.Tensor(batch["input_ids"]), ms.Tensor(batch["attention_mask"])
    labels = ms.Tensor(np.where(batch["attention_mask"] == 1, batch["input_ids"], -100))

    def loss_fn(ids, mask, labels):
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    grads = ms.value_and_grad(loss_fn, None, list(params))(ids, mask, labels)[1]
    return {name: grad.asnumpy() for name, grad in zip(names, grads)}


def main(folder, out_dir, plan):
    tp_plan = "auto"
    if plan == "auto+vocab":  # keys as resolve_tp_plan writes them: relative to the with-head model
        base = AutoConfig.from_pretrained(folder).base_model_tp_plan
        tp_plan = {**{"model." + k: v for k, v in base.items()}, "model.embed_tokens": "embedding_rowwise"}
    model = AutoModelForCausalLM.from_pretrained(folder, tp_plan=tp_plan)
    rank = model.tp_mesh.rank
    batch = np.load(os.path.join(out_dir, "batch.npz"))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    np.save(os.path.join(out_dir, f"logits_rank{rank}.npy"), np.asarray(logits))
    tokens = model.generate(batch["input_ids"][:1], max_new_tokens=4, do_sample=False)
    np.save(os.path.join(out_dir, f"tokens_rank{rank}.npy"), np.asarray(tokens))
    np.savez(os.path.join(out_dir, f"grads_rank{rank}.npz"), **loss_grads(model, batch))
    with open(os.path.join(out_dir, f"stats_rank{rank}.json"), "w") as f:
        json.dump({**model.tp_load_stats, "world": model.tp_mesh.size}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
