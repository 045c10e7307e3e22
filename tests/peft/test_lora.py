"""LoRA in PEFT's format, checked against HF `peft` on torch (the oracle) on a tiny HF-written LLaMA."""
import io
import json
import os
from contextlib import redirect_stdout

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from mindformers_hf import AutoModelForCausalLM, CheckpointError
from mindformers_hf.peft import (AutoPeftModelForCausalLM, LoraConfig, PeftModel, PeftModelForCausalLM,
                                 get_peft_model)
from mindformers_hf.safetensors_io import SafetensorsFile
from tests.conftest import batch, make_hf_checkpoint

TOL = 1e-4


# ---------------------------------------------------------------- the HF oracle
def hf_base(folder):
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def hf_peft_config(**kwargs):
    import peft

    return peft.LoraConfig(**kwargs)


def hf_logits(model, ids, mask=None):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask))
    return out.logits.numpy()


def hf_nb_params(model):
    return model.get_nb_trainable_parameters()


def printed_counts(model):
    buf = io.StringIO()
    with redirect_stdout(buf):
        model.print_trainable_parameters()
    return buf.getvalue().strip()


def assert_close(got, want, mask=None):
    diff = np.abs(np.asarray(got) - np.asarray(want))
    if mask is not None:
        diff = diff[mask.astype(bool)]  # padded query rows are implementation-defined in HF itself
    assert diff.max() <= TOL, diff.max()


@pytest.fixture(scope="module")
def biased_llama(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("biased"), attention_bias=True, mlp_bias=True, seed=3)


CONFIGS = {
    "qv": dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, task_type="CAUSAL_LM"),
    "all_linear_rslora_patterns_head": dict(
        r=4, lora_alpha=8, target_modules="all-linear", use_rslora=True, task_type="CAUSAL_LM",
        rank_pattern={"down_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.o_proj": 3}, modules_to_save=["lm_head"]),
    "regex_layer1": dict(r=2, lora_alpha=4, target_modules=r".*layers\.1\.mlp\.(gate|up)_proj", task_type="CAUSAL_LM"),
    "layers_to_transform": dict(r=2, lora_alpha=2, target_modules=["k_proj", "o_proj"], layers_to_transform=[0],
                                exclude_modules=["o_proj"], task_type="CAUSAL_LM"),
}


# ---------------------------------------------------------------- config file
def test_adapter_config_json_equals_hf_peft(tmp_path):
    for name, kwargs in CONFIGS.items():
        LoraConfig(**kwargs).save_pretrained(tmp_path / name / "ours")
        hf_peft_config(**kwargs).save_pretrained(tmp_path / name / "hf")
        ours = json.loads((tmp_path / name / "ours" / "adapter_config.json").read_text())
        theirs = json.loads((tmp_path / name / "hf" / "adapter_config.json").read_text())
        for data in (ours, theirs):  # sets are written in arbitrary order by PEFT
            for key in ("target_modules", "exclude_modules"):
                if isinstance(data[key], list):
                    data[key] = sorted(data[key])
        assert ours == theirs, name
        again = LoraConfig.from_pretrained(str(tmp_path / name / "hf"))
        assert again.r == kwargs["r"] and again.task_type == "CAUSAL_LM"


# ---------------------------------------------------------------- ours -> HF peft
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_our_adapter_loads_in_hf_peft_with_equal_logits(tiny_llama, tmp_path, name):
    import peft

    kwargs = CONFIGS[name]
    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                          LoraConfig(**kwargs, init_lora_weights=False))
    if "modules_to_save" in kwargs:  # make the trained head differ from the base head
        head = ours.base_model.model.lm_head.modules_to_save["default"].weight
        head.set_data(head + 0.05)
    ours.save_pretrained(tmp_path / "adapter")
    keys = SafetensorsFile(tmp_path / "adapter" / "adapter_model.safetensors").keys()
    assert all(k.startswith("base_model.model.model.layers.") or k == "base_model.model.lm_head.weight" for k in keys)
    assert not any(".default." in k for k in keys)

    theirs = peft.PeftModel.from_pretrained(hf_base(tiny_llama), str(tmp_path / "adapter"), is_trainable=True).eval()
    # every tensor arrived (HF peft only warns about missing keys): its adapter state equals our file
    hf_state = peft.get_peft_model_state_dict(theirs)
    assert sorted(hf_state) == sorted(keys)
    file = SafetensorsFile(tmp_path / "adapter" / "adapter_model.safetensors")
    for key in keys:
        assert np.array_equal(hf_state[key].numpy(), file.get(key)), key
    # same trainable / total counts as HF peft for the same config, printed the same way
    assert ours.get_nb_trainable_parameters() == hf_nb_params(theirs)
    assert printed_counts(ours) == printed_counts(theirs)
    # and the same in-memory parameter names
    hf_names = sorted(n for n, _ in theirs.named_parameters())
    assert sorted(n for n, _ in ours.parameters_and_names()) == hf_names

    ids, mask = batch(pad_left=(0, 3))
    want = hf_logits(theirs, ids, mask)
    assert_close(ours(input_ids=ids, attention_mask=mask).logits, want, mask)
    base = hf_logits(hf_base(tiny_llama), ids, mask)
    assert np.abs(want - base).max() > 1e-3  # the adapter really changes the output


# ---------------------------------------------------------------- HF peft -> ours
def _hf_saved_adapter(folder, out, seed=0, **kwargs):
    import peft
    import torch

    torch.manual_seed(seed)
    model = peft.get_peft_model(hf_base(folder), hf_peft_config(init_lora_weights=False, **kwargs))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modules_to_save" in name or (name.endswith(".bias") and p.requires_grad):
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    return model.eval()


def test_hf_adapter_loads_in_ours_with_equal_logits(tiny_llama, tmp_path):
    theirs = _hf_saved_adapter(tiny_llama, tmp_path / "hf", target_modules=["q_proj", "v_proj", "down_proj"],
                               r=4, lora_alpha=32, modules_to_save=["lm_head"], task_type="CAUSAL_LM")
    ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(tmp_path / "hf"))
    assert isinstance(ours, PeftModelForCausalLM)
    ids, mask = batch(pad_left=(0, 3))
    assert_close(ours(input_ids=ids, attention_mask=mask).logits, hf_logits(theirs, ids, mask), mask)
    # loaded for inference (is_trainable=False): nothing trains, as in HF peft
    assert ours.get_nb_trainable_parameters()[0] == 0
    assert printed_counts(ours).startswith("trainable params: 0 ||")


def test_hf_adapter_with_bias_all_on_biased_model(biased_llama, tmp_path):
    theirs = _hf_saved_adapter(biased_llama, tmp_path / "hf", target_modules=["q_proj", "up_proj"], r=4,
                               lora_alpha=8, bias="all", lora_bias=True, task_type="CAUSAL_LM")
    ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(biased_llama), str(tmp_path / "hf"),
                                     is_trainable=True)
    ids, _ = batch(pad_left=(0, 0))
    assert_close(ours(input_ids=ids).logits, hf_logits(theirs, ids))
    import peft

    again = peft.PeftModel.from_pretrained(hf_base(biased_llama), str(tmp_path / "hf"), is_trainable=True)
    assert ours.get_nb_trainable_parameters() == hf_nb_params(again)
    ours.save_pretrained(tmp_path / "ours")  # bias="all" saves every bias, as PEFT does
    assert sorted(SafetensorsFile(tmp_path / "ours" / "adapter_model.safetensors").keys()) == \
        sorted(SafetensorsFile(tmp_path / "hf" / "adapter_model.safetensors").keys())


# ---------------------------------------------------------------- merge / unload
def test_merge_and_unload_equals_hf_merge(tiny_llama, tmp_path):
    theirs = _hf_saved_adapter(tiny_llama, tmp_path / "hf", target_modules=["q_proj", "o_proj", "gate_proj"], r=4,
                               lora_alpha=16, use_rslora=True, task_type="CAUSAL_LM")
    ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(tmp_path / "hf"))
    ids, mask = batch(pad_left=(0, 3))
    unmerged = ours(input_ids=ids, attention_mask=mask).logits

    merged = ours.merge_and_unload()
    hf_merged = theirs.merge_and_unload()
    hf_weights = {n: p.detach().numpy() for n, p in hf_merged.named_parameters()}
    names = [n for n, _ in merged.parameters_and_names()]
    assert sorted(names) == sorted(hf_weights)  # plain HF names again: no base_layer, no lora_
    for name, param in merged.parameters_and_names():
        assert param.name == name
        assert np.abs(param.asnumpy() - hf_weights[name]).max() <= 1e-6, name
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert_close(merged(input_ids=ids, attention_mask=mask).logits, unmerged, mask)
    # the merged model saves as a plain checkpoint that HF transformers loads
    merged.save_pretrained(tmp_path / "merged")
    assert_close(hf_logits(hf_base(str(tmp_path / "merged")), ids, mask), hf_logits(hf_merged, ids, mask), mask)


def test_unload_disable_and_merge_adapter(tiny_llama, tmp_path):
    _hf_saved_adapter(tiny_llama, tmp_path / "hf", target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8,
                      task_type="CAUSAL_LM")
    ids, mask = batch(pad_left=(0, 3))
    base_logits = hf_logits(hf_base(tiny_llama), ids, mask)
    ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(tmp_path / "hf"))
    adapted = ours(input_ids=ids, attention_mask=mask).logits
    with ours.disable_adapter():
        assert_close(ours(input_ids=ids, attention_mask=mask).logits, base_logits, mask)
    ours.merge_adapter()
    assert_close(ours(input_ids=ids, attention_mask=mask).logits, adapted, mask)
    ours.unmerge_adapter()
    base = ours.unload()
    assert_close(base(input_ids=ids, attention_mask=mask).logits, base_logits, mask)
    for name, param in base.parameters_and_names():
        assert param.name == name and "lora" not in name and "base_layer" not in name


# ---------------------------------------------------------------- training
def test_gradients_flow_only_into_lora_and_match_hf(tiny_llama, tmp_path):
    import peft
    import torch

    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                     task_type="CAUSAL_LM"))
    ours.save_pretrained(tmp_path / "adapter")
    ids, _ = batch(pad_left=(0, 0))
    labels = ids.copy()
    labels[:, :3] = -100

    trainable = ours.trainable_params()
    names = sorted(p.name for p in trainable)
    assert names and all(".lora_A.default." in n or ".lora_B.default." in n for n in names)
    assert names == sorted(n for n, p in ours.parameters_and_names() if p.requires_grad)

    def loss_fn(input_ids, labels):
        return ours(input_ids=input_ids, labels=labels).loss

    loss, grads = ms.value_and_grad(loss_fn, None, trainable)(ms.Tensor(ids), ms.Tensor(labels))

    theirs = peft.PeftModel.from_pretrained(hf_base(tiny_llama), str(tmp_path / "adapter"), is_trainable=True)
    hf_loss = theirs(input_ids=torch.tensor(ids), labels=torch.tensor(labels)).loss
    hf_loss.backward()
    hf_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters() if p.requires_grad}
    assert sorted(hf_grads) == names
    assert abs(float(loss) - float(hf_loss)) <= 1e-5
    for param, grad in zip(trainable, grads):
        assert np.abs(grad.asnumpy() - hf_grads[param.name]).max() <= 1e-5, param.name

    before = {n: p.asnumpy().copy() for n, p in ours.parameters_and_names()}
    optimizer = nn.AdamWeightDecay(trainable, learning_rate=1e-2)
    optimizer(grads)
    for name, param in ours.parameters_and_names():
        changed = not np.array_equal(before[name], param.asnumpy())
        assert changed == (name in names), name
    # a Trainer saves through save_pretrained, possibly handing it the full state dict: same adapter file
    ours.save_pretrained(tmp_path / "plain")
    ours.save_pretrained(tmp_path / "from_state_dict", state_dict=dict(ours.parameters_and_names()))
    plain = SafetensorsFile(tmp_path / "plain" / "adapter_model.safetensors")
    other = SafetensorsFile(tmp_path / "from_state_dict" / "adapter_model.safetensors")
    assert sorted(plain.keys()) == sorted(other.keys()) and len(plain.keys()) == len(names)
    assert all(np.array_equal(plain.get(k), other.get(k)) for k in plain.keys())


def test_new_adapter_starts_as_base_and_kaiming_bounds(tiny_llama):
    ids, _ = batch(pad_left=(0, 0))
    base_logits = hf_logits(hf_base(tiny_llama), ids)
    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                          LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert_close(ours(input_ids=ids).logits, base_logits)  # B = 0
    layer = ours.base_model.model.model.layers[0].self_attn.q_proj
    a, b = layer.lora_A["default"].weight.asnumpy(), layer.lora_B["default"].weight.asnumpy()
    bound = 1 / np.sqrt(64)
    assert np.all(b == 0) and np.abs(a).max() <= bound and np.abs(a).max() > 0.5 * bound
    assert layer.scaling["default"] == 2.0
    assert [n for n, _ in ours.named_parameters()] == [p.name for p in ours.parameters()]


def test_lora_dropout_acts_in_train_mode_only(tiny_llama):
    ids, _ = batch(pad_left=(0, 0))
    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                          LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], lora_dropout=0.5,
                                     init_lora_weights=False, task_type="CAUSAL_LM"))
    evaluated = ours(input_ids=ids).logits
    assert_close(ours(input_ids=ids).logits, evaluated)
    ours.train()
    assert np.abs(ours(input_ids=ids).logits - evaluated).max() > 1e-3
    ours.eval()
    assert_close(ours(input_ids=ids).logits, evaluated)
    assert ours.config is ours.get_base_model().config and ours.generation_config is not None
    assert ours.num_parameters(only_trainable=True) == ours.get_nb_trainable_parameters()[0]


def test_auto_peft_model_and_second_adapter(tiny_llama, tmp_path):
    import peft

    _hf_saved_adapter(tiny_llama, tmp_path / "a", seed=1, target_modules=["q_proj"], r=2, lora_alpha=4,
                      task_type="CAUSAL_LM")
    _hf_saved_adapter(tiny_llama, tmp_path / "b", seed=2, target_modules=["v_proj", "up_proj"], r=2, lora_alpha=4,
                      task_type="CAUSAL_LM")
    for folder in ("a", "b"):  # HF peft records the base path we pass it: point it at the checkpoint
        cfg_path = tmp_path / folder / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = tiny_llama
        cfg_path.write_text(json.dumps(cfg))
    ids, _ = batch(pad_left=(0, 0))
    ours = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "a"))
    theirs = peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "a")).eval()
    assert_close(ours(input_ids=ids).logits, hf_logits(theirs, ids))

    ours.load_adapter(str(tmp_path / "b"), adapter_name="b")
    theirs.load_adapter(str(tmp_path / "b"), adapter_name="b")
    assert ours.active_adapter == "default"
    assert_close(ours(input_ids=ids).logits, hf_logits(theirs, ids))
    ours.set_adapter("b")
    theirs.set_adapter("b")
    assert_close(ours(input_ids=ids).logits, hf_logits(theirs, ids))
    ours.save_pretrained(tmp_path / "both")
    assert os.path.isfile(tmp_path / "both" / "adapter_model.safetensors")
    assert os.path.isfile(tmp_path / "both" / "b" / "adapter_model.safetensors")


# ---------------------------------------------------------------- errors
def test_errors_name_the_problem(tiny_llama, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with pytest.raises(NotImplementedError, match="DoRA"):
        get_peft_model(model, LoraConfig(target_modules=["q_proj"], use_dora=True))
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(model, LoraConfig(target_modules=["nonexistent_proj"]))
    with pytest.raises(NotImplementedError, match="lm_head"):
        get_peft_model(model, LoraConfig(target_modules=["lm_head"]))
    with pytest.raises(NotImplementedError, match="pissa"):
        get_peft_model(model, LoraConfig(target_modules=["q_proj"], init_lora_weights="pissa"))
    # an adapter file for other modules than the config names: the missing key is named
    _hf_saved_adapter(tiny_llama, tmp_path / "hf", target_modules=["q_proj"], r=2, task_type="CAUSAL_LM")
    cfg_path = tmp_path / "hf" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = ["q_proj", "k_proj"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="k_proj.lora_A.weight"):
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(tmp_path / "hf"))


@pytest.mark.parametrize("kwargs", [dict(target_modules=["q_proj", "v_proj"]),
                                    dict(target_modules="all-linear", modules_to_save=["lm_head"]),
                                    dict(target_modules=r".*\.1\.mlp\.(up|down)_proj")])
def test_targeted_module_names_match_peft(tiny_llama, kwargs):
    import peft

    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(**kwargs))
    theirs = peft.get_peft_model(hf_base(tiny_llama), hf_peft_config(**kwargs))
    assert ours.targeted_module_names == theirs.targeted_module_names
    assert ours.base_model.targeted_module_names == theirs.base_model.targeted_module_names
    assert ours.targeted_parameter_names == theirs.targeted_parameter_names == []
    assert ours.get_nb_trainable_parameters() == hf_nb_params(theirs)
    assert printed_counts(ours) == printed_counts(theirs)
    # a second adapter on the same modules adds no duplicate names, as in PEFT
    ours.add_adapter("other", LoraConfig(**kwargs))
    theirs.add_adapter("other", hf_peft_config(**kwargs))
    assert ours.targeted_module_names == theirs.targeted_module_names
