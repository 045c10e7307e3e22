"""LoRA through the Trainer: only adapter weights train, checkpoints hold the adapter, results match
HF peft + transformers' Trainer from the same adapter initialisation."""
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments
from tests.trainer.test_trainer_parity import ARGS, _dataset

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def adapter_init(tiny_llama, tmp_path_factory):
    """An adapter written by HF peft with random A and B (so the first step already moves everything)."""
    import peft
    import torch
    import transformers

    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                             task_type="CAUSAL_LM")
    folder = str(tmp_path_factory.mktemp("adapter_init"))
    peft.get_peft_model(base, config).save_pretrained(folder)
    return folder


def _hf_lora(tiny_llama, adapter, out):
    import peft
    import torch
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, adapter, is_trainable=True)
    trainer = transformers.Trainer(model=model, args=transformers.TrainingArguments(str(out), use_cpu=True, **ARGS),
                                   train_dataset=_dataset())
    trainer.train()
    return {k: v.detach().numpy().copy() for k, v in model.named_parameters() if "lora_" in k}


def test_lora_training_matches_hf_peft(tiny_llama, adapter_init, tmp_path):
    from mindformers_hf.peft import PeftModel

    want = _hf_lora(tiny_llama, adapter_init, tmp_path / "hf")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    frozen = base.lm_head.weight.asnumpy().copy()
    model = PeftModel.from_pretrained(base, adapter_init, is_trainable=True)
    args = TrainingArguments(str(tmp_path / "ours"), **{**ARGS, "save_strategy": "steps", "save_steps": 2})
    trainer = Trainer(model=model, args=args, train_dataset=_dataset())
    trainer.train()

    got = {name: p.asnumpy() for name, p in model.parameters_and_names() if "lora_" in name}
    assert set(trainer.optimizer.names) == set(got)  # the base weights are frozen
    assert set(got) == set(want)  # PEFT's parameter names
    for name, value in want.items():
        assert np.linalg.norm(got[name] - value) / np.linalg.norm(value) <= 1e-5, name
    np.testing.assert_array_equal(base.lm_head.weight.asnumpy(), frozen)

    checkpoint = tmp_path / "ours" / "checkpoint-2"
    files = set(os.listdir(checkpoint))
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors"} <= files
    assert "model.safetensors" not in files

    # resuming from the adapter checkpoint reaches the same adapter
    base2 = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model2 = PeftModel.from_pretrained(base2, adapter_init, is_trainable=True)
    trainer2 = Trainer(model=model2, args=args, train_dataset=_dataset())
    trainer2.train(resume_from_checkpoint=str(checkpoint))
    for name, p in model2.parameters_and_names():
        if "lora_" in name:
            np.testing.assert_allclose(p.asnumpy(), got[name], rtol=1e-6, atol=1e-8)
