"""accelerate's loop with only the import changed; tests/trainer/dp_jobs.py runs it under
`mindformers-hf launch --num_processes 2` (batches of 2 per process) and in one process (the same global batches of 4);
test_accelerator.py compares.

argv: model_dir output_dir
"""
import sys

import numpy as np

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.accelerate import Accelerator
from mindformers_hf.trainer import AdamW

model_dir, output_dir = sys.argv[1], sys.argv[2]
accelerator = Accelerator()
rng = np.random.default_rng(5)
ids = rng.integers(3, 128, size=(8, 12)).astype(np.int64)  # no ignored labels: equal tokens per rank
per_process = 2 if accelerator.num_processes > 1 else 4
data = [{"input_ids": ids[i:i + per_process], "labels": ids[i:i + per_process]} for i in range(0, 8, per_process)]

model = AutoModelForCausalLM.from_pretrained(model_dir)
optimizer = AdamW(model.parameters(), lr=3e-3, eps=1e-6)
model, optimizer, data = accelerator.prepare(model, optimizer, data)
model.train()
for epoch in range(2):
    for batch in data:
        outputs = model(**batch)
        accelerator.backward(outputs.loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        gathered = accelerator.gather(batch["input_ids"])
        mean_loss = accelerator.reduce(outputs.loss, "mean")
        accelerator.print(f"STEP loss={float(mean_loss):.6f} gathered={tuple(gathered.shape)}")
accelerator.wait_for_everyone()
accelerator.save_model(model, output_dir)
digest = sum(float(np.abs(p.asnumpy().astype(np.float64)).sum()) for _, p in model.parameters_and_names())
print(f"WEIGHTS_DIGEST rank={accelerator.process_index} world={accelerator.num_processes} value={digest!r}",
      flush=True)
