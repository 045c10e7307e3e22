"""LoRA on Whisper (encoder and decoder self-attention, decoder cross-attention) against HF peft on torch, on a tiny
HF-written checkpoint: adapter files both ways, merge_and_unload, and Trainer steps.

peft 0.21.2 has no default target modules for `model_type` "whisper" (both sides then raise), and its
PeftModelForSeq2SeqLM.forward passes `input_ids=None` that Whisper rejects, so the HF side is called through
`.base_model` for SEQ_2_SEQ_LM adapters (ours forwards only the caller's arguments: docs/differences.md).
"""
import json

import numpy as np
import pytest

from mindformers_hf.models.whisper import WhisperForConditionalGeneration
from mindformers_hf.peft import LoraConfig, PeftModel, PeftModelForSeq2SeqLM, get_peft_model
from mindformers_hf.safetensors_io import SafetensorsFile
from tests.models.test_whisper_parity import features, hf_model, make_whisper_checkpoint

pytest.importorskip("peft")
IDS = np.array([[3, 11, 40, 41, 6, 7], [3, 5, 9, 17, 33, 2]], np.int64)
QV = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def hf_logits(model, feats=None):
    import torch

    with torch.no_grad():
        return model(input_features=torch.tensor(features() if feats is None else feats),
                     decoder_input_ids=torch.tensor(IDS)).logits.numpy()


def ours_logits(model):
    return np.asarray(model(input_features=features(), decoder_input_ids=IDS).logits)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    """(checkpoint, adapter written by HF peft: random A and B on q_proj / v_proj, task_type SEQ_2_SEQ_LM)."""
    import peft
    import torch

    folder = make_whisper_checkpoint(tmp_path_factory.mktemp("whisper_lora"))
    torch.manual_seed(0)
    theirs = peft.get_peft_model(hf_model(folder), peft.LoraConfig(**QV, init_lora_weights=False,
                                                                   task_type="SEQ_2_SEQ_LM"))
    adapter = str(tmp_path_factory.mktemp("whisper_adapter"))
    theirs.save_pretrained(adapter)
    return folder, adapter


def test_our_adapter_loads_in_hf_peft(whisper, tmp_path):
    import peft

    folder, _ = whisper
    for side in (lambda: get_peft_model(WhisperForConditionalGeneration.from_pretrained(folder), LoraConfig(r=4)),
                 lambda: peft.get_peft_model(hf_model(folder), peft.LoraConfig(r=4, task_type="SEQ_2_SEQ_LM"))):
        with pytest.raises(ValueError, match="Please specify `target_modules`"):  # no default for whisper
            side()

    ours = get_peft_model(WhisperForConditionalGeneration.from_pretrained(folder), LoraConfig(**QV,
                                                                                             init_lora_weights=False))
    theirs_new = peft.get_peft_model(hf_model(folder), peft.LoraConfig(**QV, init_lora_weights=False))
    assert ours.targeted_module_names == theirs_new.targeted_module_names
    assert any(".encoder_attn.q_proj" in n for n in ours.targeted_module_names)
    assert ours.get_nb_trainable_parameters() == theirs_new.get_nb_trainable_parameters()
    ours.save_pretrained(tmp_path / "ours")
    theirs_new.save_pretrained(tmp_path / "hf")
    files = [json.loads((tmp_path / side / "adapter_config.json").read_text()) for side in ("ours", "hf")]
    for data in files:
        data["target_modules"] = sorted(data["target_modules"])
    assert files[0] == files[1]
    keys = sorted(SafetensorsFile(tmp_path / "ours" / "adapter_model.safetensors").keys())
    assert keys == sorted(SafetensorsFile(tmp_path / "hf" / "adapter_model.safetensors").keys())

    loaded = peft.PeftModel.from_pretrained(hf_model(folder), str(tmp_path / "ours")).eval()
    want = hf_logits(loaded)
    assert np.abs(ours_logits(ours) - want).max() <= 1e-4
    assert np.abs(want - hf_logits(hf_model(folder))).max() > 1e-3  # the adapter really changes the output


def test_hf_adapter_loads_in_ours_and_merges_as_peft(whisper):
    import peft

    folder, adapter = whisper
    theirs = peft.PeftModel.from_pretrained(hf_model(folder), adapter).eval()
    ours = PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(folder), adapter)
    assert isinstance(ours, PeftModelForSeq2SeqLM) and isinstance(theirs, peft.PeftModelForSeq2SeqLM)
    want = hf_logits(theirs.base_model)
    unmerged = ours_logits(ours)
    assert np.abs(unmerged - want).max() <= 1e-4

    merged, hf_merged = ours.merge_and_unload(), theirs.merge_and_unload()
    hf_weights = {n: p.detach().numpy() for n, p in hf_merged.named_parameters()}
    assert sorted(n for n, _ in merged.parameters_and_names()) == sorted(hf_weights)
    for name, param in merged.parameters_and_names():
        assert np.abs(param.asnumpy() - hf_weights[name]).max() <= 1e-6, name
    assert type(merged) is WhisperForConditionalGeneration
    assert np.abs(ours_logits(merged) - want).max() <= 1e-4


def _dataset():
    rng = np.random.default_rng(0)
    return [{"input_features": rng.standard_normal((8, 32)).astype(np.float32).tolist(),
             "labels": rng.integers(4, 96, size=6).tolist()} for _ in range(4)]


ARGS = dict(learning_rate=3e-3, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_train_epochs=2,
            weight_decay=0.1, max_grad_norm=0.5, adam_epsilon=1e-6, logging_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, seed=7, remove_unused_columns=False)


def test_lora_trainer_steps_match_hf_peft(whisper, tmp_path):
    """Two AdamW steps over the whole 4-example dataset each (so the shuffled order does not matter). HF loads the
    adapter as task_type None (its PeftModelForSeq2SeqLM cannot call Whisper); ours as the file's SEQ_2_SEQ_LM."""
    import peft
    import transformers

    from mindformers_hf import Seq2SeqTrainer, Seq2SeqTrainingArguments

    folder, adapter = whisper
    config = peft.PeftConfig.from_pretrained(adapter)
    config.task_type = None
    hf = peft.PeftModel.from_pretrained(hf_model(folder), adapter, is_trainable=True, config=config)
    hf_trainer = transformers.Seq2SeqTrainer(model=hf, train_dataset=_dataset(), args=transformers.Seq2SeqTrainingArguments(
        str(tmp_path / "hf"), use_cpu=True, **ARGS))
    hf_trainer.train()
    want = {k: v.detach().numpy() for k, v in hf.named_parameters() if "lora_" in k}

    base = WhisperForConditionalGeneration.from_pretrained(folder)
    frozen = {name: p.asnumpy().copy() for name, p in base.parameters_and_names()}
    model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    trainer = Seq2SeqTrainer(model=model, train_dataset=_dataset(),
                             args=Seq2SeqTrainingArguments(str(tmp_path / "ours"), **ARGS))
    start = {name: p.asnumpy().copy() for name, p in model.parameters_and_names() if "lora_" in name}
    trainer.train()
    got = {name: p.asnumpy() for name, p in model.parameters_and_names() if "lora_" in name}
    assert set(got) == set(want) == set(trainer.optimizer.names)  # PEFT's names; only the adapter trains
    for name, value in want.items():
        assert np.linalg.norm(got[name] - value) / np.linalg.norm(value) <= 1e-5, name
        assert np.linalg.norm(got[name] - start[name]) / np.linalg.norm(value) > 1e-3, name  # the steps moved it
    for name, p in base.parameters_and_names():
        if name in frozen:
            np.testing.assert_array_equal(p.asnumpy(), frozen[name], err_msg=name)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    want_losses = [h["loss"] for h in hf_trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and losses == pytest.approx(want_losses, rel=1e-5)
