"""Train and LoRA matrix cells: every text family against transformers' Trainer and HF `peft` (torch, fp32, CPU).

`check_train(our_folder, hf_folder, tmp_path)` runs our Trainer on `our_folder` and transformers' Trainer on
`hf_folder` (the same weights: the same folder for a native family, the HF-native model a remote format was
written from for the others) with the same arguments and data, and compares the loss and grad_norm logged at
every step and every weight after two AdamW steps.

`check_lora(our_folder, hf_folder, tmp_path)` checks PEFT's files both ways (our adapter loads in HF peft with
equal logits; a peft-written adapter loads in ours with equal logits), merge_and_unload against peft's merge,
and the default target modules peft picks for the model_type.

Remote formats (config.json with an `auto_map`, no code) are compared through the published conversion the
checkpoint was written with (tests/models/remote_conversions.py): weights as the format's tensors, adapters
with fused modules (W_pack, wqkv, c_attn, query_key_value) split into the HF-native q/k/v adapters they equal.
"""
import json
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.trainer import Trainer, TrainingArguments

# Two AdamW steps, each over the whole 8-example dataset (batch 4 x 2 accumulation steps, one epoch a step), taken
# in order ("sequential"): the summed token loss would not depend on the order, but an MoE router's load-balancing
# loss is computed per micro-batch, so both Trainers must form the same micro-batches. adam_epsilon=1e-4: Adam's
# first steps move each weight by about lr * g / (|g| + eps), so a gradient that is zero in exact arithmetic (a key
# bias: softmax ignores a shift shared by all keys) but ~1e-9 in fp32 still moves by up to lr * 1e-9 / eps, in a
# direction set by rounding. 1e-4 is far below the real gradients here (~1e-3 per element: grad_norm ~1) and keeps
# that noise ~1e-8 of a step; the optimizer itself is checked element by element in tests/trainer/test_optimization.py.
ARGS = dict(learning_rate=3e-3, per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2,
            lr_scheduler_type="cosine", weight_decay=0.1, max_grad_norm=0.5, adam_beta2=0.99, adam_epsilon=1e-4,
            train_sampling_strategy="sequential", logging_steps=1, save_strategy="no", report_to="none",
            disable_tqdm=True, seed=7)
LOSS_RTOL = 1e-5      # the same forward in fp32: only summation order differs
GRAD_NORM_RTOL = 1e-4  # a norm over every gradient element: a few ulps of each, accumulated
WEIGHT_RTOL = 1e-5    # per tensor, ||ours - HF|| / ||HF||, after two steps at lr 3e-3 (see adam_epsilon above)
LOGITS_ATOL = 1e-4    # the repository's logits tolerance
MERGE_ATOL = 1e-6     # W + scale * B @ A in fp32, elementwise


def train_dataset(length=12, rows=8, vocab=128):
    rng = np.random.default_rng(3)
    ids = rng.integers(3, vocab, size=(rows, length))
    labels = ids.copy()
    labels[::3, :4] = -100  # some ignored positions, so num_items_in_batch is not just the token count
    return [{"input_ids": i.tolist(), "attention_mask": [1] * length, "labels": l.tolist()}
            for i, l in zip(ids, labels)]


def _read_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def remote_format(folder):
    """The remote format's name (model_type) if `folder` is a remote-format checkpoint, else None."""
    config = _read_config(folder)
    return config["model_type"] if "auto_map" in config else None


def _hf_model(folder):
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def _weights(ours, hf):
    """({name: array} of our parameters, of HF's state_dict: buffers too, as DeepSeek-V3's e_score_correction_bias,
    a parameter here). A tied head is one tensor: HF's state_dict lists it under both names, our parameters once."""
    got = {name: param.asnumpy() for name, param in ours.parameters_and_names()}
    want = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    for name in set(want) - set(got):
        assert hf.config.tie_word_embeddings and name == "lm_head.weight", name
        del want[name]
    return got, want


def _steps(history):
    return [h for h in history if "loss" in h]


# ------------------------------------------------------------------------------------------------ train
def check_train(our_folder, hf_folder, tmp_path):
    import transformers
    from tests.models import remote_conversions as conv

    data = train_dataset(vocab=_read_config(hf_folder)["vocab_size"])
    fmt = remote_format(our_folder)
    hf = conv.hf_training_model(fmt, our_folder, _hf_model(hf_folder)) if fmt else _hf_model(hf_folder)

    class FormatTrainer(transformers.Trainer):  # a remote format: weight decay as on the format's own code
        def get_decay_parameter_names(self, model):
            return conv.format_decay_names(fmt, our_folder, model, super().get_decay_parameter_names)

    hf_trainer = (FormatTrainer if fmt else transformers.Trainer)(
        model=hf, train_dataset=data, args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **ARGS))
    hf_trainer.train()

    ours = AutoModelForCausalLM.from_pretrained(our_folder)
    trainer = Trainer(model=ours, args=TrainingArguments(str(tmp_path / "ours"), **ARGS), train_dataset=data)
    trainer.train()

    got_steps, want_steps = _steps(trainer.state.log_history), _steps(hf_trainer.state.log_history)
    assert [h["step"] for h in got_steps] == [h["step"] for h in want_steps] == [1, 2]
    for got, want in zip(got_steps, want_steps):
        assert got["loss"] == pytest.approx(want["loss"], rel=LOSS_RTOL), (got, want)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=GRAD_NORM_RTOL), (got, want)
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-12)

    if fmt:  # the format's own tensors: ours as save_pretrained writes them, HF's through the conversion
        ours.save_pretrained(tmp_path / "saved")
        got = conv.read_tensors(tmp_path / "saved")
        want = conv.to_format(fmt, hf, our_folder)
    else:
        got, want = _weights(ours, hf)
    assert set(got) == set(want)
    for name, value in want.items():
        rel = np.linalg.norm(got[name] - value) / max(np.linalg.norm(value), 1e-12)
        assert rel <= WEIGHT_RTOL, f"{name}: relative difference {rel:.2e}"


# ------------------------------------------------------------------------------------------------ LoRA
MOE_ARCHITECTURES = ("Mixtral", "Qwen2Moe", "Qwen3Moe", "DeepseekV2", "DeepseekV3")
LORA = dict(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM")


def _logits(model, ids, mask, alibi_heads=None):
    """A torch model's logits; with ALiBi's reference inputs for a Baichuan ALiBi checkpoint (remote_conversions)."""
    import torch

    from tests.models import remote_conversions as conv

    ids = torch.tensor(ids)
    inputs = conv.alibi_inputs(mask, alibi_heads) if alibi_heads else {"attention_mask": torch.tensor(mask)}
    with torch.no_grad():
        return model(input_ids=ids, **inputs).logits.numpy()


def _assert_logits(got, want, mask):
    diff = np.abs(np.asarray(got) - np.asarray(want))[mask.astype(bool)]  # padded query rows: undefined in HF
    assert diff.max() <= LOGITS_ATOL, diff.max()


def _adapter_keys(folder):
    from mindformers_hf.safetensors_io import SafetensorsFile

    reader = SafetensorsFile(os.path.join(folder, "adapter_model.safetensors"))
    keys = sorted(reader.keys())
    reader.close()
    return keys


def _adapter_config(folder):
    with open(os.path.join(folder, "adapter_config.json")) as f:
        config = json.load(f)
    for key in ("target_modules", "exclude_modules"):  # sets, written in arbitrary order
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    config.pop("base_model_name_or_path")  # a path or None
    config["target_parameters"] = config.get("target_parameters") or None  # peft's MoE conversion writes []
    return config


def _peft_reference(fmt, our_folder, hf_folder):
    """The torch model HF peft adapts: the HF model itself, or for a remote format a module tree with the
    format's module names (tests/models/remote_conversions.py: skeleton), as peft sees the remote code."""
    from tests.models import remote_conversions as conv

    return conv.skeleton(our_folder, fmt) if fmt else _hf_model(hf_folder).eval()


def _peft_model(reference, **kwargs):
    import peft
    import torch

    torch.manual_seed(0)
    model = peft.get_peft_model(reference, peft.LoraConfig(**kwargs))
    return model.eval()


def check_lora(our_folder, hf_folder, tmp_path):
    import peft
    from mindformers_hf.peft import LoraConfig, PeftModel, get_peft_model
    from tests.conftest import batch
    from tests.models import remote_conversions as conv

    fmt = remote_format(our_folder)
    vocab = _read_config(hf_folder)["vocab_size"]
    ids, mask = batch(vocab, length=11, pad_left=(0, 3))
    hf = _hf_model(hf_folder).eval()
    heads = conv.alibi_heads(our_folder) if fmt else None

    reference = _peft_reference(fmt, our_folder, hf_folder)
    # every linear layer but the head: "all-linear" for HF models; spelled out on a remote format's module tree,
    # where peft (the tree is no PreTrainedModel) cannot tell the head apart. MoE models: the attention's layers
    # (peft's "all-linear" also adapts the fused expert tensors there, as target_parameters: not supported here)
    if fmt:
        targets = conv.linear_targets(reference)
    elif _read_config(hf_folder).get("architectures", [""])[0].startswith(MOE_ARCHITECTURES):
        targets = sorted({name.rpartition(".")[2] for name, module in reference.named_modules()
                          if ".self_attn." in name and type(module).__name__ == "Linear"})
    else:
        targets = "all-linear"

    # 1. default target modules: peft's table for the model_type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING),
    # or peft's refusal when it has no entry. (peft 0.21.2 on transformers 5 loses the table's entry for the
    # MoE types it converts, Mixtral's: it then refuses; the table is what it means to apply.)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = _read_config(our_folder)["model_type"]
    if model_type not in DEFAULTS:
        with pytest.raises(ValueError, match="target_modules"):
            _peft_model(reference, task_type="CAUSAL_LM")
        with pytest.raises(ValueError, match="Please specify `target_modules`"):
            get_peft_model(AutoModelForCausalLM.from_pretrained(our_folder), LoraConfig(task_type="CAUSAL_LM"))
    else:
        want = _peft_model(reference, target_modules=DEFAULTS[model_type]).targeted_module_names
        ours = get_peft_model(AutoModelForCausalLM.from_pretrained(our_folder), LoraConfig(task_type="CAUSAL_LM"))
        assert ours.targeted_module_names == want
        assert ours.peft_config["default"].target_modules == set(DEFAULTS[model_type])

    # 2. our adapter -> HF peft: the keys peft writes for this model, equal logits
    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(our_folder), LoraConfig(target_modules=targets, **LORA))
    ours.save_pretrained(tmp_path / "lora_ours")
    theirs = _peft_model(_peft_reference(fmt, our_folder, hf_folder), target_modules=targets, **LORA)
    assert _adapter_keys(tmp_path / "lora_ours") == sorted(peft.get_peft_model_state_dict(theirs))
    got = ours(input_ids=ids, attention_mask=mask).logits
    folder = tmp_path / "lora_ours"
    if fmt:
        folder = conv.adapter_to_native(fmt, folder, tmp_path / "lora_ours_native", hf)
    loaded = peft.PeftModel.from_pretrained(_hf_model(hf_folder), str(folder)).eval()
    want = _logits(loaded, ids, mask, heads)
    _assert_logits(got, want, mask)
    assert np.abs(want - _logits(hf, ids, mask, heads)).max() > 1e-3  # the adapter changes the output

    # 3. a peft-written adapter -> ours, equal logits
    theirs.save_pretrained(tmp_path / "lora_theirs")
    # (the same adapter_config.json as peft writes: fan_in_fan_out follows GPT-2's Conv1D as in peft)
    assert _adapter_config(tmp_path / "lora_ours") == _adapter_config(tmp_path / "lora_theirs")
    ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(our_folder), str(tmp_path / "lora_theirs"))
    if fmt:
        folder = conv.adapter_to_native(fmt, tmp_path / "lora_theirs", tmp_path / "lora_theirs_native", hf)
        theirs = peft.PeftModel.from_pretrained(_hf_model(hf_folder), str(folder)).eval()
    want = _logits(theirs, ids, mask, heads)
    _assert_logits(ours(input_ids=ids, attention_mask=mask).logits, want, mask)

    # 4. merge_and_unload: the same weights as peft's merge
    merged, hf_merged = ours.merge_and_unload(), theirs.merge_and_unload()
    if fmt:
        merged.save_pretrained(tmp_path / "lora_merged")
        got = conv.read_tensors(tmp_path / "lora_merged")
        want = conv.to_format(fmt, hf_merged, our_folder)
    else:
        got, want = _weights(merged, hf_merged)
    assert set(got) == set(want)
    for name, value in want.items():
        assert np.abs(got[name] - value).max() <= MERGE_ATOL, name
    _assert_logits(merged(input_ids=ids, attention_mask=mask).logits, _logits(hf_merged, ids, mask, heads), mask)
