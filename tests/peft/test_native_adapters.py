"""transformers' native adapter API (`model.add_adapter`, `load_adapter`, `set_adapter`, ...) against transformers +
HF peft on torch, on the same tiny LLaMA; adapter folders move both ways between the two."""
import json
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.peft import LoraConfig
from tests.conftest import batch
from tests.peft.test_lora import assert_close, hf_base, hf_logits

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)


def _ours_logits(model, ids, mask):
    return np.asarray(model(input_ids=ids, attention_mask=mask).logits)


def _trainable(model):
    """Names of trainable parameters, ours (MindSpore) or HF's (torch)."""
    if hasattr(model, "parameters_and_names"):
        return sorted(name for name, p in model.parameters_and_names() if p.requires_grad)
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


PREFIX = "base_model.model."


def _strip(names):
    return sorted(n[len(PREFIX):] if n.startswith(PREFIX) else n for n in names)


def _file_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return sorted(f.keys())


# transformers 5.25's own native API (model.add_adapter) needs peft >= 0.22; the tests run peft 0.21, whose
# PeftModel writes and reads the same files transformers does (adapter_config.json + adapter_model.safetensors,
# keys "base_model.model.<name>"), and whose inject/set/disable/delete logic transformers' mixin calls.
def test_adapter_added_here_loads_in_hf_peft(tiny_llama, tmp_path):
    import peft

    ids, mask = batch()
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    base_logits = _ours_logits(ours, ids, mask)
    ours.add_adapter(LoraConfig(**LORA))
    theirs = peft.get_peft_model(hf_base(tiny_llama), peft.LoraConfig(**LORA))
    assert ours.active_adapters() == theirs.active_adapters == ["default"]
    assert _trainable(ours) == _strip(_trainable(theirs))
    assert sorted(ours.get_adapter_state_dict()) == _strip(peft.get_peft_model_state_dict(theirs))

    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    # transformers' save_pretrained of a model with adapters: the adapter's two files and the generation config
    assert sorted(os.listdir(tmp_path / "ours")) == [
        "adapter_config.json", "adapter_model.safetensors", "generation_config.json"]
    assert _file_keys(tmp_path / "ours" / "adapter_model.safetensors") == _file_keys(
        tmp_path / "theirs" / "adapter_model.safetensors")
    with open(tmp_path / "ours" / "adapter_config.json") as f:
        saved = json.load(f)
    assert saved["inference_mode"] is True and saved["base_model_name_or_path"] == tiny_llama

    loaded = peft.PeftModel.from_pretrained(hf_base(tiny_llama), str(tmp_path / "ours"))
    got = _ours_logits(ours, ids, mask)
    assert_close(got, hf_logits(loaded, ids, mask), mask)
    assert np.abs(got - base_logits).max() > 1e-3  # the adapter changes the output


def test_hf_peft_adapters_load_switch_disable_and_delete(tiny_llama, tmp_path):
    import peft

    ids, mask = batch()
    for name, config in (("first", LORA), ("second", {**LORA, "r": 2, "target_modules": ["k_proj", "o_proj"]})):
        peft.get_peft_model(hf_base(tiny_llama), peft.LoraConfig(**config)).save_pretrained(tmp_path / name)

    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    base = _ours_logits(ours, ids, mask)
    theirs = peft.PeftModel.from_pretrained(hf_base(tiny_llama), str(tmp_path / "first"), adapter_name="first")
    ours.load_adapter(str(tmp_path / "first"), adapter_name="first")
    assert ours.active_adapters() == ["first"] and not _trainable(ours)
    assert_close(_ours_logits(ours, ids, mask), hf_logits(theirs, ids, mask), mask)

    theirs.load_adapter(str(tmp_path / "second"), adapter_name="second", is_trainable=True)
    ours.load_adapter(str(tmp_path / "second"), adapter_name="second", is_trainable=True)
    assert ours.active_adapters() == ["first"]  # loaded beside the active adapter, not activated
    assert_close(_ours_logits(ours, ids, mask), hf_logits(theirs, ids, mask), mask)

    theirs.set_adapter("second")
    ours.set_adapter("second")
    want = _strip(n for n, _ in theirs.named_parameters() if ".second." in n and "lora_" in n)
    assert _trainable(ours) == want
    second_logits = _ours_logits(ours, ids, mask)
    assert_close(second_logits, hf_logits(theirs, ids, mask), mask)

    ours.disable_adapters()
    assert not _trainable(ours)
    with theirs.disable_adapter():
        assert_close(_ours_logits(ours, ids, mask), hf_logits(theirs, ids, mask), mask)
    assert_close(_ours_logits(ours, ids, mask), base, mask)
    ours.enable_adapters()
    assert _trainable(ours) == want
    assert_close(_ours_logits(ours, ids, mask), second_logits, mask)

    sd = ours.get_adapter_state_dict("first")
    assert sorted(sd) == _strip(peft.get_peft_model_state_dict(theirs, adapter_name="first"))
    theirs.delete_adapter("first")
    ours.delete_adapter("first")
    assert list(ours.peft_config) == list(theirs.peft_config) == ["second"]
    assert_close(_ours_logits(ours, ids, mask), hf_logits(theirs, ids, mask), mask)
    ours.delete_adapter("second")
    assert not hasattr(ours, "peft_config")
    assert not ours._hf_peft_config_loaded
    assert_close(_ours_logits(ours, ids, mask), base, mask)


def test_from_pretrained_of_an_adapter_folder_matches_transformers(tiny_llama, tmp_path):
    """transformers' AutoModelForCausalLM.from_pretrained(adapter folder): the base named in adapter_config.json,
    with the adapter loaded (this part of transformers' API runs with peft 0.21)."""
    import peft
    import torch
    import transformers

    ids, mask = batch()
    peft.get_peft_model(hf_base(tiny_llama), peft.LoraConfig(**LORA)).save_pretrained(tmp_path / "adapter")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "adapter"), dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter", adapter_name="mine")
    assert ours.active_adapters() == ["mine"] and list(theirs.peft_config) == ["default"]
    assert _trainable(ours) == _trainable(theirs) == []
    base = _ours_logits(AutoModelForCausalLM.from_pretrained(tiny_llama), ids, mask)
    got = _ours_logits(ours, ids, mask)
    assert_close(got, hf_logits(theirs.eval(), ids, mask), mask)
    assert np.abs(got - base).max() > 1e-3


def test_load_adapter_from_state_dict_and_errors(tiny_llama, tmp_path):
    ids, mask = batch()
    source = AutoModelForCausalLM.from_pretrained(tiny_llama)
    source.add_adapter(LoraConfig(**LORA))
    state = {key: value.asnumpy() for key, value in source.get_adapter_state_dict().items()}
    target = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with pytest.raises(ValueError, match="No adapter loaded"):
        target.set_adapter("default")
    target.load_adapter(peft_config=LoraConfig(**LORA), adapter_state_dict=state)
    assert_close(_ours_logits(target, ids, mask), _ours_logits(source, ids, mask), mask)
    with pytest.raises(ValueError, match="already exists"):
        target.load_adapter(peft_config=LoraConfig(**LORA), adapter_state_dict=state)
    with pytest.raises(ValueError, match="not found"):
        target.set_adapter("nope")
    with pytest.raises(TypeError, match="PeftConfig"):
        target.add_adapter({"r": 4}, adapter_name="x")
    # a state dict missing a tensor is refused and leaves no half-loaded adapter behind
    broken = dict(state)
    broken.pop(next(iter(broken)))
    with pytest.raises(Exception, match="Missing keys"):
        target.load_adapter(peft_config=LoraConfig(**LORA), adapter_state_dict=broken, adapter_name="broken")
    assert list(target.peft_config) == ["default"]
    assert target.active_adapters() == ["default"]
    assert _trainable(target) == []  # still loaded for inference, as before the failed load


def test_generate_follows_adapter_changes(tiny_llama, tmp_path):
    """generate() after adding, disabling and re-enabling adapters (native API and PeftModel) gives HF peft's
    greedy tokens: a decode step compiled before the change is not replayed."""
    import peft
    import torch

    from mindformers_hf.peft import get_peft_model

    ids = np.array([[5, 6, 7, 8, 9]])
    strong = {**LORA, "lora_alpha": 400}  # an adapter that changes the greedy tokens

    def ours_gen(model):
        return np.asarray(model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)).tolist()

    def hf_gen(model):
        with torch.no_grad():
            return model.generate(input_ids=torch.tensor(ids), max_new_tokens=6, do_sample=False).tolist()

    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    base_tokens = ours_gen(ours)  # compiles and pools a decode step
    ours.add_adapter(LoraConfig(**strong))
    ours.save_pretrained(tmp_path / "strong")
    theirs = peft.PeftModel.from_pretrained(hf_base(tiny_llama), str(tmp_path / "strong"))
    adapted = hf_gen(theirs)
    assert adapted != base_tokens
    assert ours_gen(ours) == adapted
    ours.disable_adapters()
    assert ours_gen(ours) == base_tokens
    ours.enable_adapters()
    assert ours_gen(ours) == adapted

    wrapped = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(**strong))
    wrapped.save_pretrained(tmp_path / "wrapped")
    theirs = peft.PeftModel.from_pretrained(hf_base(tiny_llama), str(tmp_path / "wrapped"))
    assert ours_gen(wrapped) == hf_gen(theirs)
    with wrapped.disable_adapter():
        assert ours_gen(wrapped) == base_tokens
    assert ours_gen(wrapped) == hf_gen(theirs)


def test_trainer_trains_a_native_adapter_and_the_saved_folder_reloads(tiny_llama, tmp_path):
    """transformers' "train a PEFT adapter" recipe: add_adapter, Trainer, save_pretrained, from_pretrained(folder)."""
    from mindformers_hf import Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.add_adapter(LoraConfig(lora_alpha=16, lora_dropout=0.1, r=8, bias="none", task_type="CAUSAL_LM"))
    rng = np.random.default_rng(0)
    data = [{"input_ids": ids, "attention_mask": [1] * 12, "labels": ids}
            for ids in (rng.integers(3, 128, 12).tolist() for _ in range(8))]
    before = {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}
    args = TrainingArguments(str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2,
                             report_to="none", save_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data).train()
    changed = {n for n, p in model.parameters_and_names() if np.abs(p.asnumpy() - before[n]).max() > 0}
    assert changed == {n for n in before if ".lora_" in n}  # q_proj / v_proj (PEFT's llama default), A and B
    model.save_pretrained(tmp_path / "adapter")
    assert sorted(os.listdir(tmp_path / "adapter")) == [
        "adapter_config.json", "adapter_model.safetensors", "generation_config.json"]
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter")
    ids, mask = batch()
    model.eval()
    np.testing.assert_array_equal(_ours_logits(again, ids, mask), _ours_logits(model, ids, mask))


def test_hotswap_replaces_an_adapters_weights_in_place(tiny_llama):
    ids, mask = batch()

    def adapter_state(seed):
        np.random.seed(seed)
        source = AutoModelForCausalLM.from_pretrained(tiny_llama)
        source.add_adapter(LoraConfig(**LORA))
        return {k: v.asnumpy() for k, v in source.get_adapter_state_dict().items()}, _ours_logits(source, ids, mask)

    (first, _), (second, second_logits) = adapter_state(1), adapter_state(2)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with pytest.raises(ValueError, match="there must already be an existing adapter"):
        model.load_adapter(peft_config=LoraConfig(**LORA), adapter_state_dict=first, hotswap=True)
    model.load_adapter(peft_config=LoraConfig(**LORA), adapter_state_dict=first)
    model.load_adapter(peft_config=LoraConfig(**LORA), adapter_state_dict=second, hotswap=True)
    assert list(model.peft_config) == ["default"]
    assert_close(_ours_logits(model, ids, mask), second_logits, mask)
    last = list(first)[-1]
    broken = {k: (v[:1] if k == last else v) for k, v in first.items()}  # the last tensor has a wrong shape
    with pytest.raises(Exception, match="Shape mismatch"):
        model.load_adapter(peft_config=LoraConfig(**LORA), adapter_state_dict=broken, hotswap=True)
    assert_close(_ours_logits(model, ids, mask), second_logits, mask)  # nothing was half-written
    with pytest.raises(NotImplementedError, match="hotswap of an adapter with another"):
        model.load_adapter(peft_config=LoraConfig(**{**LORA, "lora_alpha": 3}), adapter_state_dict=first, hotswap=True)


def test_trainer_resumes_a_native_adapter_run(tiny_llama, tmp_path):
    """Four steps in one go equal two steps, a checkpoint, and a resumed run of a fresh model with the adapter."""
    from mindformers_hf import Trainer, TrainingArguments

    rng = np.random.default_rng(1)
    data = [{"input_ids": ids, "attention_mask": [1] * 12, "labels": ids}
            for ids in (rng.integers(3, 128, 12).tolist() for _ in range(16))]

    def run(out, resume=None, seed=0):
        np.random.seed(seed)  # the adapter's initial weights
        model = AutoModelForCausalLM.from_pretrained(tiny_llama)
        model.add_adapter(LoraConfig(**LORA), adapter_name="mine")
        args = TrainingArguments(str(out), per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2,
                                 report_to="none", save_strategy="steps", save_steps=2, disable_tqdm=True, seed=3)
        Trainer(model=model, args=args, train_dataset=data).train(resume_from_checkpoint=resume)
        return {k: v.asnumpy() for k, v in model.get_adapter_state_dict().items()}

    want = run(tmp_path / "once")
    got = run(tmp_path / "resumed", resume=str(tmp_path / "once" / "checkpoint-2"), seed=9)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-6, rtol=0, err_msg=key)
