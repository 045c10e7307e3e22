"""Trainer(push_to_hub=True) and trainer.push_to_hub() against the local hub on 127.0.0.1: what lands in the
repo, and HF transformers loads the pushed model with our trained weights."""
import numpy as np

from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments
from tests.conftest import batch, make_hf_checkpoint


def test_trainer_pushes_every_save_and_at_the_end(hub_env, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(make_hf_checkpoint(str(tmp_path / "tiny")))
    ids, mask = batch(pad_left=(0, 0), rows=4, length=9)
    train = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": ids[i]} for i in range(4)]
    out = str(tmp_path / "run")
    args = TrainingArguments(out, per_device_train_batch_size=2, max_steps=2, save_steps=1, learning_rate=1e-2,
                             report_to="none", disable_tqdm=True, push_to_hub=True, hub_model_id="me/run",
                             hub_token="hf_test_token")
    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    server = hub_env.server
    repo = server.repos["me/run"]
    # one commit per checkpoint (every_save), each with the model files and none of the optimizer state
    assert len(repo.commits) >= 2
    files = server.files("me/run")
    assert {"config.json", "model.safetensors", "training_args.json"} <= set(files)
    assert not {"optimizer.safetensors", "scheduler.json", "rng_state.json", "trainer_state.json"} & set(files)

    trainer.push_to_hub(commit_message="End of training")
    files = server.files("me/run")
    assert not any(name.startswith("checkpoint-") for name in files)
    import torch
    import transformers

    theirs = transformers.AutoModelForCausalLM.from_pretrained("me/run").eval()
    with torch.no_grad():
        want = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    ours = model(input_ids=ids, attention_mask=mask).logits
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)
    start = AutoModelForCausalLM.from_pretrained(str(tmp_path / "tiny"))
    assert np.abs(start(input_ids=ids, attention_mask=mask).logits - want).max() > 1e-3  # the pushed model trained
