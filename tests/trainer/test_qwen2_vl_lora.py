"""LoRA on Qwen2-VL's and Qwen2.5-VL's language model through the Trainer, with images in every example: the adapter after three
steps equals HF peft + transformers' Trainer from the same adapter initialisation, and the base (vision tower
included) stays frozen. Each step takes the whole 4-example dataset as one micro-batch: transformers' Qwen2-VL
loss is a per-micro-batch mean (accepts_loss_kwargs=False), so only the set of examples must match, not the
shuffled order (ours is not torch's RandomSampler's: trainer/data_loader.py)."""
import numpy as np
import pytest

from tests.models.qwen2_vl_fixtures import END, IMAGE, PATCH_DIM, START, make_qwen2_vl_checkpoint
from tests.trainer.test_trainer_parity import ARGS

pytest.importorskip("peft")
STEPS = dict(ARGS, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_train_epochs=3,
             remove_unused_columns=False)


def _dataset(rows=4):
    rng = np.random.default_rng(3)
    out = []
    for row in range(rows):
        ids = [int(i) for i in rng.integers(3, 140, 3)] + [START] + [IMAGE] * 4 + [END] + \
              [int(i) for i in rng.integers(3, 140, 4)]
        labels = [-100] * 3 + ids[3:] if row % 3 == 0 else list(ids)
        out.append({"input_ids": ids, "labels": labels, "image_grid_thw": [1, 4, 4],
                    "pixel_values": rng.standard_normal((16, PATCH_DIM)).astype(np.float32)})
    return out


def _collator(convert):
    """Rows of equal length stacked; every image's patches concatenated, as Qwen2-VL's processor lays them out."""
    def collate(rows):
        ids = np.array([r["input_ids"] for r in rows])
        batch = {"input_ids": ids, "labels": np.array([r["labels"] for r in rows]),
                 "attention_mask": np.ones_like(ids), "mm_token_type_ids": (ids == IMAGE).astype(np.int64),
                 "pixel_values": np.concatenate([r["pixel_values"] for r in rows]),
                 "image_grid_thw": np.array([r["image_grid_thw"] for r in rows])}
        return {k: convert(v) for k, v in batch.items()}
    return collate


@pytest.fixture(scope="module", params=("qwen2_vl", "qwen2_5_vl"))
def folders(request, tmp_path_factory):
    """(checkpoint of the model type, adapter written by HF peft with random A and B on q_proj / v_proj)."""
    import peft
    import torch
    import transformers

    folder = make_qwen2_vl_checkpoint(tmp_path_factory.mktemp(request.param + "_lora"), request.param)
    torch.manual_seed(0)
    base = transformers.AutoModelForImageTextToText.from_pretrained(folder)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                             task_type="CAUSAL_LM")
    adapter = str(tmp_path_factory.mktemp(request.param + "_adapter"))
    peft.get_peft_model(base, config).save_pretrained(adapter)
    return folder, adapter


def test_lora_training_matches_hf_peft(folders, tmp_path):
    import peft
    import torch
    import transformers

    from mindformers_hf import AutoModelForImageTextToText, Trainer, TrainingArguments
    from mindformers_hf.peft import PeftModel

    folder, adapter = folders
    hf = peft.PeftModel.from_pretrained(transformers.AutoModelForImageTextToText.from_pretrained(folder), adapter,
                                        is_trainable=True)
    transformers.Trainer(model=hf, args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **STEPS),
                         train_dataset=_dataset(), data_collator=_collator(torch.tensor)).train()
    want = {k: v.detach().numpy() for k, v in hf.named_parameters() if "lora_" in k}

    base = AutoModelForImageTextToText.from_pretrained(folder)
    frozen = {name: p.asnumpy().copy() for name, p in base.parameters_and_names()}
    model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path / "ours"), **STEPS), train_dataset=_dataset(),
                      data_collator=_collator(lambda v: v))
    trainer.train()
    got = {name: p.asnumpy() for name, p in model.parameters_and_names() if "lora_" in name}
    assert set(got) == set(want) == set(trainer.optimizer.names)  # PEFT's names; only the adapter trains
    assert all(".language_model." in name for name in got)
    for name, value in want.items():
        assert np.linalg.norm(got[name] - value) / np.linalg.norm(value) <= 1e-5, name
    checked = set()
    for name, p in base.parameters_and_names():
        if name in frozen:
            np.testing.assert_array_equal(p.asnumpy(), frozen[name], err_msg=name)
            checked.add(name)
    assert {n for n in frozen if n.startswith(("model.visual.", "lm_head."))} <= checked
