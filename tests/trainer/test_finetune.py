"""HF's causal-LM fine-tuning recipe, run as written (imports aside) on a tiny LLaMA and a small text."""
import json
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer, \
    TrainingArguments
from tests.trainer.conftest import TEXT

datasets = pytest.importorskip("datasets")


def _lm_dataset(tokenizer, block_size=32):
    lines = [line.strip() + "." for line in TEXT.split(".") if line.strip()]
    ds = datasets.Dataset.from_dict({"text": lines}).train_test_split(test_size=0.2, seed=0)

    def preprocess(examples):
        return tokenizer([" ".join(x.split()) for x in examples["text"]])

    tokenized = ds.map(preprocess, batched=True, remove_columns=ds["train"].column_names)

    def group_texts(examples):  # the guide's function
        concatenated = {k: sum(examples[k], []) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // block_size) * block_size
        result = {k: [t[i: i + block_size] for i in range(0, total_length, block_size)]
                  for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    return tokenized.map(group_texts, batched=True)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, char_llama, char_tokenizer_dir):
    out = str(tmp_path_factory.mktemp("clm_out"))
    tokenizer = AutoTokenizer.from_pretrained(char_tokenizer_dir)
    tokenizer.pad_token = tokenizer.eos_token
    lm_dataset = _lm_dataset(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(char_llama)
    args = TrainingArguments(out, learning_rate=3e-3, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             num_train_epochs=2, lr_scheduler_type="cosine", warmup_ratio=0.1, weight_decay=0.01,
                             max_grad_norm=1.0, bf16=True, logging_steps=2, eval_strategy="steps", eval_steps=4,
                             save_steps=4, save_total_limit=2, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=lm_dataset["train"], eval_dataset=lm_dataset["test"],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                      processing_class=tokenizer)
    before = trainer.evaluate()["eval_loss"]
    result = trainer.train()
    after = trainer.evaluate()["eval_loss"]
    trainer.save_model()
    return trainer, out, before, after, result


def test_eval_loss_goes_down(finetuned):
    trainer, _, before, after, result = finetuned
    assert after < before - 0.5, (before, after)
    assert result.global_step == trainer.state.max_steps > 4
    assert np.isfinite(result.training_loss)


def test_checkpoint_layout_and_limit(finetuned):
    trainer, out, *_ = finetuned
    checkpoints = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-"))
    assert len(checkpoints) == 2  # save_total_limit
    assert not [d for d in os.listdir(out) if d.startswith(".tmp-")]
    last = os.path.join(out, f"checkpoint-{trainer.state.global_step}")
    files = set(os.listdir(last))
    assert {"model.safetensors", "config.json", "optimizer.safetensors", "optimizer.json", "scheduler.json",
            "rng_state.json", "trainer_state.json", "training_args.json", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".pt", ".pth", ".bin"))]  # no pickles


def test_trainer_state_is_hf_format(finetuned):
    from transformers import TrainerState

    trainer, out, *_ = finetuned
    path = os.path.join(out, f"checkpoint-{trainer.state.global_step}", "trainer_state.json")
    state = TrainerState.load_from_json(path)
    assert state.global_step == trainer.state.global_step and state.max_steps == trainer.state.max_steps
    train_logs = [h for h in state.log_history if "loss" in h]
    eval_logs = [h for h in state.log_history if "eval_loss" in h]
    assert train_logs and eval_logs
    assert set(train_logs[0]) == {"loss", "grad_norm", "learning_rate", "epoch", "step"}
    assert {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch",
            "step"} <= set(eval_logs[0])
    with open(path) as f:
        assert json.load(f)["stateful_callbacks"]["TrainerControl"]["args"].keys() >= {"should_training_stop"}


def test_saved_model_loads_in_hf_transformers(finetuned):
    import torch
    import transformers

    trainer, out, *_ = finetuned
    ids = np.array([[5, 9, 12, 20, 7, 30]])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        want = theirs(input_ids=torch.tensor(ids)).logits.numpy()
    got = trainer.model(input_ids=ids).logits
    assert np.abs(got - want).max() <= 1e-4


def test_resume_after_training_is_a_no_op(finetuned):
    trainer, out, *_ = finetuned
    weights = trainer.model.lm_head.weight.asnumpy().copy()
    result = trainer.train(resume_from_checkpoint=True)
    assert result.global_step == trainer.state.max_steps
    np.testing.assert_array_equal(trainer.model.lm_head.weight.asnumpy(), weights)
