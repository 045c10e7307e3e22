"""LoRA on CogVLM2 through the Trainer, with an image in every example: the adapter after three steps equals HF peft +
transformers' Trainer on the torch reference of tests/models/test_cogvlm2_parity.py (transformers has no CogVLM2
class; the reference is written from the published code) from the same adapter initialisation, and the base stays
frozen. Each step takes the whole 4-example dataset as one micro-batch (the reference's loss is a per-batch mean)."""
import numpy as np
import pytest

from tests.models.test_cogvlm2_parity import LORA_TARGETS, TOKENS_PER_IMAGE, VISION_ID, reference_from, write_checkpoint
from tests.trainer.test_trainer_parity import ARGS

pytest.importorskip("peft")
STEPS = dict(ARGS, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_train_epochs=3,
             remove_unused_columns=False)


def _dataset(rows=4):
    rng = np.random.default_rng(3)
    out = []
    for row in range(rows):
        ids = [1] + [VISION_ID] * TOKENS_PER_IMAGE + [int(i) for i in rng.integers(3, 140, 5)]
        labels = [-100] * (1 + TOKENS_PER_IMAGE) + ids[1 + TOKENS_PER_IMAGE:]
        out.append({"input_ids": ids, "labels": labels if row % 2 else [-100] * (len(ids) - 2) + ids[-2:],
                    "token_type_ids": [0] + [1] * TOKENS_PER_IMAGE + [0] * 5,
                    "images": rng.standard_normal((3, 16, 16)).astype(np.float32)})
    return out


def _collator(convert):
    def collate(rows):
        ids = np.array([r["input_ids"] for r in rows])
        batch = {"input_ids": ids, "labels": np.array([r["labels"] for r in rows]),
                 "token_type_ids": np.array([r["token_type_ids"] for r in rows]),
                 "attention_mask": np.ones_like(ids), "images": np.stack([r["images"] for r in rows])}
        return {k: convert(v) for k, v in batch.items()}
    return collate


def test_lora_training_matches_hf_peft_on_the_reference(tmp_path):
    import peft
    import torch
    import transformers

    from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments
    from mindformers_hf.peft import PeftModel

    folder, _ = write_checkpoint(tmp_path / "cogvlm2")
    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    adapter = str(tmp_path / "adapter")
    peft.get_peft_model(reference_from(folder), config).save_pretrained(adapter)

    hf = peft.PeftModel.from_pretrained(reference_from(folder), adapter, is_trainable=True)
    start = {k: v.detach().numpy().copy() for k, v in hf.named_parameters() if "lora_" in k}
    transformers.Trainer(model=hf, args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **STEPS),
                         train_dataset=_dataset(), data_collator=_collator(torch.tensor)).train()
    want = {k: v.detach().numpy() for k, v in hf.named_parameters() if "lora_" in k}
    assert max(np.abs(want[k] - start[k]).max() for k in want) > 1e-3  # the steps moved the adapter

    base = AutoModelForCausalLM.from_pretrained(folder)
    frozen = {name: p.asnumpy().copy() for name, p in base.parameters_and_names()}
    model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path / "ours"), **STEPS), train_dataset=_dataset(),
                      data_collator=_collator(lambda v: v))
    trainer.train()
    got = {name: p.asnumpy() for name, p in model.parameters_and_names() if "lora_" in name}
    assert set(got) == set(want) == set(trainer.optimizer.names)  # PEFT's names; only the adapter trains
    assert any(".vision_expert_" in n for n in got) and any(".vision_mlp." in n for n in got)
    for name, value in want.items():
        assert np.linalg.norm(got[name] - value) / np.linalg.norm(value) <= 1e-5, name
    for name, p in base.parameters_and_names():
        if name in frozen:
            np.testing.assert_array_equal(p.asnumpy(), frozen[name], err_msg=name)
