"""An HF-style fine-tuning script with only the import line changed; test_mesh_zero.py runs it as one process
and under `mindformers-hf launch` with a data x tensor mesh and ZeRO stage 1 turned on from the launcher's
environment (accelerate's PARALLELISM_CONFIG_TP_SIZE / ACCELERATE_DEEPSPEED_ZERO_STAGE), then compares.

argv: model_dir output_dir per_device_train_batch_size [resume]
The callback only reports (optimizer state bytes, bytes read at load); it does not touch training.
"""
import sys

import numpy as np

from mindformers_hf import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

model_dir, output_dir, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
resume = len(sys.argv) > 4 and sys.argv[4] == "resume"


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
args = TrainingArguments(output_dir, per_device_train_batch_size=batch_size, max_steps=3, learning_rate=1e-3,
                         logging_steps=1, save_steps=2, report_to="none", disable_tqdm=True, seed=7,
                         adam_epsilon=1e-4)  # (Adam's m/sqrt(v) turns float-rounding differences of near-zero
# gradients -- tensor parallelism sums partial products in another order -- into whole steps; eps bounds that)
rng = np.random.default_rng(0)
train = [{"input_ids": rng.integers(3, 128, size=int(n)).tolist()} for n in rng.integers(4, 17, size=12)]
trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[Report()])
trainer.train(resume_from_checkpoint=True if resume else None)
trainer.save_model()
