"""Adapter state dicts in PEFT's key format, and adapter_model.safetensors reading and writing.

In memory a LoRA weight is `base_model.model.<module>.lora_A.<adapter>.weight`; on disk the adapter name
is dropped (`...lora_A.weight`) and a modules_to_save copy is stored under the original module's name
(`base_model.model.lm_head.weight`), exactly as PEFT writes them. Loading maps the file's keys back onto
the parameters of the named adapter; as everywhere in mindformers_hf, a missing or unexpected key is an
error (PEFT only warns).
"""
import os

import numpy as np
import mindspore as ms

from ..tensor_io import to_parameter_data as _to_parameter_data
from ..safetensors_io import CheckpointError, SafetensorsFile, safetensors_dtype, write_safetensors
from .config import SAFETENSORS_WEIGHTS_NAME, _resolve_file
from ..weights import _Reordered
from .lora import LoraLinear

PEFT_PREFIX = "base_model.model."


def _format_table(peft_model):
    """(the model's prefix in `peft_model`'s parameter names, its checkpoint format's WeightTable or None)."""
    getter = getattr(peft_model, "get_base_model", None)
    base = getter() if callable(getter) else peft_model
    table = getattr(base, "weight_table", None)
    return (PEFT_PREFIX if base is not peft_model else ""), table


def _in_format(key, prefix, table, config):
    """An adapter key with our module path rewritten to the checkpoint format's (weights.WeightTable): for a
    `lora_B` (weight or bias), whose rows are the base weight's output rows, the format's row order too.
    Returns (key, save order or None, load order or None)."""
    if table is None or not key.startswith(prefix):
        return key, None, None
    rest = key[len(prefix):]
    marker = next((m for m in (".lora_A.", ".lora_B.") if m in rest), None)
    if marker is None:  # a modules_to_save copy or a bias: a tensor of the base model, under its own name
        name, save = table.to_checkpoint(rest)
        return prefix + name, save, table.to_ours(name)[1]
    module, _, tail = rest.partition(marker)
    name, save = table.to_checkpoint(module + ".weight")
    load = table.to_ours(name)[1]
    rows = marker == ".lora_B."
    return prefix + name[:-len(".weight")] + marker + tail, save if rows else None, load if rows else None


def _adapter_row_orders(peft_model, adapter_name):
    """{checkpoint key: (save order, load order, config)} for the keys whose rows a format reorders."""
    prefix, table = _format_table(peft_model)
    if table is None:
        return {}
    config = peft_model.get_base_model().config if prefix else peft_model.config
    out = {}
    for key in _adapter_parameters(peft_model, adapter_name, translate=False):
        name, save, load = _in_format(key, prefix, table, config)
        if save is not None or load is not None:
            out[name] = (save, load, config)
    return out


def _adapter_parameters(peft_model, adapter_name, translate=True):
    """{checkpoint key: Parameter} of one adapter: what PEFT's get_peft_model_state_dict returns (under the
    checkpoint format's module names for a model that has its own, see `_in_format`)."""
    if translate:
        prefix, table = _format_table(peft_model)
        if table is not None:
            return {_in_format(k, prefix, table, None)[0]: p
                    for k, p in _adapter_parameters(peft_model, adapter_name, translate=False).items()}
    config = peft_model.peft_config[adapter_name]
    out = {}
    lora_marks = (f".lora_A.{adapter_name}.", f".lora_B.{adapter_name}.")
    save_mark = f".modules_to_save.{adapter_name}."
    lora_layers = [n for n, c in peft_model.cells_and_names() if isinstance(c, LoraLinear)]
    for name, param in peft_model.parameters_and_names():
        if any(mark in name for mark in lora_marks):
            out[name.replace(f".{adapter_name}.", ".", 1)] = param
        elif save_mark in name:
            out[name.replace(save_mark, ".", 1)] = param
        elif name.endswith(".bias") and ".original_module." not in name and ".modules_to_save." not in name:
            if config.bias == "all":
                out[name] = param
            elif config.bias == "lora_only" and any(name == f"{p}.base_layer.bias" for p in lora_layers):
                out[name] = param
    return out


def get_peft_model_state_dict(model, state_dict=None, adapter_name="default", **kwargs):
    """The adapter's tensors under PEFT's checkpoint keys (MindSpore parameters, or `state_dict`'s values)."""
    params = _adapter_parameters(model, adapter_name)
    if state_dict is None:
        return params
    by_param = {id(p): key for key, p in params.items()}
    names = {name: by_param[id(p)] for name, p in model.parameters_and_names() if id(p) in by_param}
    return {names[k]: v for k, v in state_dict.items() if k in names}


def set_peft_model_state_dict(model, peft_model_state_dict, adapter_name="default", source="state dict"):
    """Load {checkpoint key: array} into one adapter; returns the loaded keys. Every adapter tensor must be there."""
    # A PeftModel's names start with PEFT_PREFIX, a model with native adapters' do not; files always have it.
    params = {_with_prefix(key): param for key, param in _adapter_parameters(model, adapter_name).items()}
    orders = {_with_prefix(key): value for key, value in _adapter_row_orders(model, adapter_name).items()}
    staged = {}  # checked first, written after: a bad file changes no weight of an adapter already in use
    for key, value in peft_model_state_dict.items():
        is_bits = False
        if isinstance(value, tuple):  # (array, is_bf16_bits) from our safetensors reader
            value, is_bits = value
        full = _with_prefix(key)
        if full not in params:
            raise CheckpointError(f"Unexpected key {key!r} in {source}: adapter {adapter_name!r} has no parameter "
                                  f"of that name (shape {tuple(np.shape(value))})")
        array = _to_numpy(value)
        if full in orders and orders[full][1] is not None:  # the format's row order -> ours
            array = np.asarray(orders[full][1](np.asarray(array), orders[full][2]))
        if tuple(array.shape) != tuple(params[full].shape):
            raise CheckpointError(f"Shape mismatch for {key!r} in {source}: it has {tuple(array.shape)}, adapter "
                                  f"{adapter_name!r} expects {tuple(params[full].shape)}")
        staged[full] = (array, is_bits)
    missing = sorted(set(params) - set(staged))
    if missing:
        shown = ", ".join(missing[:6])
        raise CheckpointError(f"Missing keys: {source} has no tensor for {len(missing)} parameter(s) of adapter "
                              f"{adapter_name!r}: {shown}{' ...' if len(missing) > 6 else ''}. Was it saved with a "
                              "different LoraConfig (target_modules, modules_to_save, bias)?")
    for full, (array, is_bits) in staged.items():
        params[full].set_data(_to_parameter_data(array, is_bits, params[full].dtype))
    return set(staged)


def _with_prefix(key):
    return key if key.startswith(PEFT_PREFIX) else PEFT_PREFIX + key


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, ms.Tensor):
        return value.float().asnumpy() if value.dtype == ms.bfloat16 else value.asnumpy()
    if isinstance(value, _Reordered):
        return value.asnumpy()
    from ..tensor_io import to_numpy

    return to_numpy(value)


def save_adapter_weights(peft_model, adapter_name, folder, state_dict=None):
    params = get_peft_model_state_dict(peft_model, state_dict=state_dict, adapter_name=adapter_name)
    orders = _adapter_row_orders(peft_model, adapter_name)
    entries = []
    for key, value in params.items():
        if key in orders and orders[key][0] is not None:  # our row order -> the format's
            value = _Reordered(value, orders[key][0], orders[key][2])
        key = _with_prefix(key)  # transformers' native adapters save in PEFT's format too
        if isinstance(value, ms.Tensor) and value.dtype == ms.bfloat16:
            def fetch(v=value):  # bf16 goes out as raw bits: numpy has no bfloat16
                return v.view(ms.uint16).asnumpy()
            st_dtype = "BF16"
        else:
            def fetch(v=value):
                return _to_numpy(v)
            st_dtype = safetensors_dtype(np.zeros(0, fetch().dtype))
        entries.append((key, (tuple(value.shape), st_dtype, fetch)))
    write_safetensors(os.path.join(folder, SAFETENSORS_WEIGHTS_NAME), entries, {"format": "pt"})


def load_adapter_weights(path, **hub_kwargs):
    """{key: (array, is_bf16_bits)} from adapter_model.safetensors in a folder or Hub repo."""
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, SAFETENSORS_WEIGHTS_NAME)):
        if os.path.isfile(os.path.join(path, "adapter_model.bin")):
            raise CheckpointError(f"{path} has adapter_model.bin only: pickled checkpoints are never unpickled here; "
                                  "convert it to adapter_model.safetensors first")
        raise FileNotFoundError(f"No {SAFETENSORS_WEIGHTS_NAME} in {path}")
    file = _resolve_file(path, SAFETENSORS_WEIGHTS_NAME, **hub_kwargs)
    reader = SafetensorsFile(file)
    try:
        return {key: (reader.get(key), reader.dtype(key) == "BF16") for key in reader.keys()}, file
    finally:
        reader.close()


def save_adapter(model, adapter_name, folder, state_dict=None, auto_mapping_dict=None):
    """adapter_model.safetensors and adapter_config.json of one adapter (of a PeftModel, or a model with native
    adapters), the config with `inference_mode: true` as PEFT writes it (and PEFT's `auto_mapping` if given)."""
    os.makedirs(folder, exist_ok=True)
    save_adapter_weights(model, adapter_name, folder, state_dict=state_dict)
    config = model.peft_config[adapter_name]
    inference_mode = config.inference_mode
    config.inference_mode = True
    try:
        config.save_pretrained(folder, auto_mapping_dict=auto_mapping_dict)
    finally:
        config.inference_mode = inference_mode
