"""An HF-style fine-tuning script with only the import line changed. The data-parallel tests (tests/trainer/dp_jobs.py)
run it under `mindformers-hf launch --num_processes 2` and in one process, then compare; test_mesh_zero.py runs it as
one process and as a data x tensor mesh with ZeRO stage 1 turned on from the launcher's environment (accelerate's
PARALLELISM_CONFIG_TP_SIZE / ACCELERATE_DEEPSPEED_ZERO_STAGE).

argv: model_dir output_dir per_device_train_batch_size [resume | last] [--mesh]
(resume: resume_from_checkpoint=True; last: run_clm's way, the newest checkpoint in output_dir if there is one, so
a job that `launch --max_restarts` reruns after a failure resumes; --mesh: adam_epsilon 1e-4 instead of 1e-6 and no
rank-0-only save_model (a tensor-parallel save gathers slices from every rank))
The callback only reports (optimizer state bytes, bytes read at load); it does not touch training.
"""
import os
import sys
import time

import numpy as np

from mindformers_hf import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments
from mindformers_hf.trainer import get_last_checkpoint

# what torchrun / `accelerate launch` export, read as scripts written for them do (a plain `python script.py`
# has none: a world of one)
env = {name: int(os.environ.get(name, default)) for name, default in
       (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0), ("LOCAL_WORLD_SIZE", 1), ("NODE_RANK", 0))}
mesh = "--mesh" in sys.argv
argv = [a for a in sys.argv[1:] if a != "--mesh"]
model_dir, output_dir, batch_size = argv[0], argv[1], int(argv[2])
resume = argv[3] if len(argv) > 3 else None


def collate(features):
    width = max(len(f["input_ids"]) for f in features)
    ids = np.zeros((len(features), width), np.int64)
    mask = np.zeros((len(features), width), np.int64)
    for i, f in enumerate(features):
        ids[i, :len(f["input_ids"])] = f["input_ids"]
        mask[i, :len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": np.where(mask == 1, ids, -100)}


class Report(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        moments = sum(t.nbytes for t in optimizer.state_tensors().values())
        params = sum(p.nbytes for _, p in model.parameters_and_names())
        stats = getattr(model, "tp_load_stats", None) or {}
        print(f"REPORT rank={args.process_index} moments={moments} params={params} "
              f"sharded_read={stats.get('sharded_bytes_read', -1)} sharded_file={stats.get('sharded_bytes_in_file', -1)}",
              flush=True)


model = AutoModelForCausalLM.from_pretrained(model_dir)
# (the mesh's eps: Adam's m/sqrt(v) turns float-rounding differences of near-zero gradients -- tensor parallelism
# sums partial products in another order -- into whole steps; eps bounds that)
args = TrainingArguments(output_dir, per_device_train_batch_size=batch_size, max_steps=3, learning_rate=1e-3,
                         logging_steps=1, save_steps=2, report_to="none", disable_tqdm=True, seed=7,
                         adam_epsilon=1e-4 if mesh else 1e-6)
with args.main_process_first(desc="dataset"):  # as run_clm around its dataset map: rank 0 first, then the others
    print(f"MAIN_FIRST_ENTER rank={args.process_index} t={time.time()!r}", flush=True)
    rng = np.random.default_rng(0)
    # uneven lengths: after padding, the ranks hold different numbers of label tokens in every step
    train = [{"input_ids": rng.integers(3, 128, size=int(n)).tolist()} for n in rng.integers(4, 17, size=12)]
    if args.process_index == 0 and args.world_size > 1:
        time.sleep(0.5)  # so that a rank that did not wait would enter before rank 0 leaves
    print(f"MAIN_FIRST_LEAVE rank={args.process_index} t={time.time()!r}", flush=True)
trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[Report()])
assert (args.world_size, args.process_index, args.local_process_index) == (
    env["WORLD_SIZE"], env["RANK"], env["LOCAL_RANK"]), (args.world_size, args.process_index, env)
if env["WORLD_SIZE"] > 1:
    from mindspore.communication import get_group_size, get_rank

    print(f"LAUNCH_ENV rank={env['RANK']} comm_rank={get_rank()} comm_size={get_group_size()} "
          + " ".join(f"{k}={os.environ[k]}" for k in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK",
                                                      "MASTER_ADDR", "MASTER_PORT")), flush=True)
if resume == "last":  # as run_clm: last_checkpoint = get_last_checkpoint(output_dir) when the folder exists
    checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    print(f"RESUMING_FROM rank={args.process_index} checkpoint={checkpoint}", flush=True)
else:
    checkpoint = True if resume == "resume" else None
trainer.train(resume_from_checkpoint=checkpoint)
trainer.save_model()
digest = sum(float(np.abs(p.asnumpy().astype(np.float64)).sum()) for _, p in model.parameters_and_names())
print(f"SHOULD_SAVE rank={args.process_index} value={args.should_save}", flush=True)
print(f"WEIGHTS_DIGEST rank={args.process_index} world={args.world_size} value={digest!r}", flush=True)
# the common pattern: only rank 0 saves, the other ranks go on (here: leave) without waiting for it
if trainer.is_world_process_zero() and not mesh:
    trainer.save_model(os.path.join(output_dir, "rank0_only"))
    print("RANK0_SAVED", flush=True)
