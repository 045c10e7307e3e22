"""LoRA layers and the LoRA tuner, laid out as PEFT lays them out so parameter names match PEFT's.

A targeted `Linear` child is replaced by `LoraLinear`, which keeps the original cell as `base_layer` and
one low-rank pair per adapter in `lora_A[adapter]` / `lora_B[adapter]`:
    y = base_layer(x) + lora_B(lora_A(dropout(x))) * scaling,   scaling = lora_alpha / r (rslora: / sqrt(r))
so parameter names read `...q_proj.base_layer.weight` and `...q_proj.lora_A.default.weight`, PEFT's own.
`modules_to_save` cells are wrapped in `ModulesToSaveWrapper` (`original_module` + a trainable copy per
adapter in `modules_to_save[adapter]`), also as in PEFT.

MindSpore gives a `Parameter` a `.name` when it is attached to a cell, and re-attaching a cell deeper in
the tree rewrites those names only partly (`q_proj.base_layer.weight`), so after every structural change
`sync_parameter_names` sets each `param.name` to its full path: optimizers and checkpoints key on it.
"""
import copy
import math
import re

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ..generation.runner import drop_decode_graphs
from ..layers import Linear
from ..utils import warn_once
from .config import DEFAULT_TARGET_MODULES, INCLUDE_LINEAR_LAYERS_SHORTHAND

_LOW_PRECISION = (ms.float16, ms.bfloat16)


def sync_parameter_names(root):
    """Make every `param.name` the path `root.parameters_and_names()` gives it."""
    for name, param in root.parameters_and_names():
        if param.name != name:
            param.name = name


def _uniform(shape, bound):
    return np.random.uniform(-bound, bound, size=shape).astype(np.float32)


def _set(param, array):
    param.set_data(ms.Tensor(array).astype(param.dtype))


class LoraLinear(nn.Cell):
    """A `Linear` plus low-rank adapters; PEFT's `lora.Linear`."""

    adapter_layer_names = ("lora_A", "lora_B")

    def __init__(self, base_layer, adapter_name, r, lora_alpha, lora_dropout=0.0, init_lora_weights=True,
                 use_rslora=False, lora_bias=False, autocast_adapter_dtype=True):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.fan_in_fan_out = _is_conv1d(base_layer)  # weight stored [in, out] (GPT-2's Conv1D), as PEFT's flag
        self.lora_A = nn.CellDict()
        self.lora_B = nn.CellDict()
        self.lora_dropout = nn.CellDict()
        self.r, self.lora_alpha, self.scaling, self.use_rslora, self.lora_bias = {}, {}, {}, {}, {}
        self.merged_adapters = []
        self.active_adapters = [adapter_name]
        self.disable_adapters = False
        self.update_layer(adapter_name, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, lora_bias,
                          autocast_adapter_dtype)

    @property
    def weight(self):
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    @property
    def merged(self):
        return bool(self.merged_adapters)

    def get_base_layer(self):
        return self.base_layer

    def update_layer(self, adapter_name, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, lora_bias,
                     autocast_adapter_dtype=True):
        if r <= 0:
            raise ValueError(f"`r` should be a positive integer value but the value passed is {r}")
        if lora_bias and self.base_layer.bias is None:
            warn_once(f"`lora_bias=True` was passed but the targeted layer of type {type(self.base_layer).__name__} "
                      "has no bias. This means that merging LoRA weights won't be possible.")
        base_dtype = self.base_layer.weight.dtype
        # PEFT's autocast_adapter_dtype: adapters of fp16/bf16 bases are held in fp32 for stable training.
        dtype = ms.float32 if autocast_adapter_dtype and base_dtype in _LOW_PRECISION else base_dtype
        self.lora_A[adapter_name] = Linear(self.in_features, r, False, dtype, init="zeros")
        self.lora_B[adapter_name] = Linear(r, self.out_features, lora_bias, dtype, init="zeros")
        self.lora_dropout[adapter_name] = nn.Dropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        self.use_rslora[adapter_name], self.lora_bias[adapter_name] = use_rslora, lora_bias
        self.reset_lora_parameters(adapter_name, init_lora_weights)

    def reset_lora_parameters(self, adapter_name, init_lora_weights):
        a, b = self.lora_A[adapter_name], self.lora_B[adapter_name]
        if init_lora_weights is False:
            # torch nn.Linear's own init (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))): a non-zero update
            _set(a.weight, _uniform(a.weight.shape, 1 / math.sqrt(self.in_features)))
            _set(b.weight, _uniform(b.weight.shape, 1 / math.sqrt(self.r[adapter_name])))
            if b.bias is not None:
                _set(b.bias, _uniform(b.bias.shape, 1 / math.sqrt(self.r[adapter_name])))
            return
        if init_lora_weights is True:
            # kaiming_uniform_(a=sqrt(5)) as PEFT does: bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in)
            _set(a.weight, _uniform(a.weight.shape, 1 / math.sqrt(self.in_features)))
        elif str(init_lora_weights).lower() == "gaussian":
            _set(a.weight, np.random.normal(0.0, 1 / self.r[adapter_name], a.weight.shape).astype(np.float32))
        else:
            raise NotImplementedError(f"init_lora_weights={init_lora_weights!r} is not supported")
        _set(b.weight, np.zeros(b.weight.shape, np.float32))  # B = 0: the adapted model starts as the base

    def construct(self, x):
        result = self.base_layer(x)
        if self.disable_adapters or self.merged:
            return result
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            h = x if x.dtype == lora_a.weight.dtype else x.astype(lora_a.weight.dtype)
            delta = lora_b(lora_a(self.lora_dropout[name](h))) * self.scaling[name]
            result = result + delta.astype(result.dtype)
        return result

    # ------------------------------------------------------------------ merging
    def get_delta_weight(self, adapter):
        """scaling * B @ A in float32, shaped like the base weight [out, in]."""
        a = self.lora_A[adapter].weight.astype(ms.float32)
        b = self.lora_B[adapter].weight.astype(ms.float32)
        delta = ops.matmul(b, a) * self.scaling[adapter]
        return delta.T if self.fan_in_fan_out else delta

    def merge(self, safe_merge=False, adapter_names=None):
        for name in adapter_names or self.active_adapters:
            if name not in self.lora_A or name in self.merged_adapters:
                continue
            weight = self.base_layer.weight
            merged = weight.astype(ms.float32) + self.get_delta_weight(name)
            if safe_merge and not bool(ops.isfinite(merged).all()):
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            new_bias = None
            if self.lora_bias[name]:
                if self.base_layer.bias is None:
                    raise RuntimeError("Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias.")
                new_bias = (self.base_layer.bias.astype(ms.float32)
                            + self.lora_B[name].bias.astype(ms.float32) * self.scaling[name])
            weight.set_data(merged.astype(weight.dtype))
            if new_bias is not None:
                self.base_layer.bias.set_data(new_bias.astype(self.base_layer.bias.dtype))
            self.merged_adapters.append(name)

    def unmerge(self):
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight = self.base_layer.weight
            weight.set_data((weight.astype(ms.float32) - self.get_delta_weight(name)).astype(weight.dtype))
            if self.lora_bias[name]:
                bias = self.base_layer.bias
                bias.set_data((bias.astype(ms.float32)
                               - self.lora_B[name].bias.astype(ms.float32) * self.scaling[name]).astype(bias.dtype))

    def delete_adapter(self, adapter_name):
        for table in (self.lora_A, self.lora_B, self.lora_dropout):
            if adapter_name in table:
                del table[adapter_name]
        for table in (self.r, self.lora_alpha, self.scaling, self.use_rslora, self.lora_bias):
            table.pop(adapter_name, None)
        self.active_adapters = [a for a in self.active_adapters if a != adapter_name]


class ModulesToSaveWrapper(nn.Cell):
    """A cell trained in full: `original_module` stays, `modules_to_save[adapter]` is the trainable copy."""

    def __init__(self, module_to_save, adapter_name):
        super().__init__()
        self.original_module = module_to_save
        self.modules_to_save = nn.CellDict()
        self.active_adapter = adapter_name
        self.disable_adapters = False
        self.update(adapter_name)

    def update(self, adapter_name):
        self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)

    def active_module(self):
        if self.disable_adapters or self.active_adapter not in self.modules_to_save:
            return self.original_module
        return self.modules_to_save[self.active_adapter]

    # Models that read a head's weight directly (LlamaForCausalLM.lm_logits) see the active copy.
    @property
    def weight(self):
        return self.active_module().weight

    @property
    def bias(self):
        return getattr(self.active_module(), "bias", None)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            cells = self.__dict__.get("_cells", {})
            if "original_module" in cells:
                return getattr(cells["original_module"], name)
            raise

    def construct(self, *args, **kwargs):
        return self.active_module()(*args, **kwargs)

    def delete_adapter(self, adapter_name):
        if adapter_name in self.modules_to_save:
            del self.modules_to_save[adapter_name]


def _is_tuner(cell):
    return isinstance(cell, (LoraLinear, ModulesToSaveWrapper))


def _get_submodules(model, key):
    cells = dict(model.cells_and_names())
    parent_key, _, target_name = key.rpartition(".")
    return cells[parent_key], cells[key], target_name


def _replace_child(parent, name, new):
    if isinstance(parent, (nn.CellList, nn.SequentialCell)):
        parent[int(name)] = new
    elif isinstance(parent, nn.CellDict):
        parent[name] = new
    else:
        setattr(parent, name, new)


class _Excluded:
    """A key that matches `exclude_modules` or `modules_to_save`: never a LoRA target."""

    def __bool__(self):
        return False


def check_target_module_exists(config, key):
    """PEFT's matching rules: a str is a full regex; a list matches by exact name or dotted suffix."""
    if config.exclude_modules:
        if isinstance(config.exclude_modules, str):
            if re.fullmatch(config.exclude_modules, key):
                return _Excluded()
        elif key in config.exclude_modules or any(key.endswith(f".{k}") for k in config.exclude_modules):
            return _Excluded()
    if config.modules_to_save and any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in config.modules_to_save):
        return _Excluded()
    targets = config.target_modules
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    found = any(key.endswith(f".{t}") for t in targets)
    layer_indexes = config.layers_to_transform
    if found and layer_indexes is not None and (not isinstance(layer_indexes, list) or layer_indexes):
        patterns = config.layers_pattern
        match = None
        if not patterns:
            match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)  # first numbered segment, as PEFT
        else:
            for pattern in [patterns] if isinstance(patterns, str) else patterns:
                match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
                if match:
                    break
        if match is None:
            return False
        index = int(match.group("idx"))
        found = index == layer_indexes if isinstance(layer_indexes, int) else index in layer_indexes
    return found


def _is_conv1d(cell):
    return bool(getattr(type(cell), "fan_in_fan_out", False))


def _is_linear(cell):
    """A layer LoRA adapts: our Linear, or a Conv1D (PEFT's linear classes are nn.Linear and Conv1D)."""
    return isinstance(cell, Linear) or _is_conv1d(cell)


def checkpoint_module_name(model):
    """our module path -> the module path in the model's checkpoint format. Formats with their own tensor names
    (weights.CheckpointFormatMixin's `weight_table`: InternLM2's `attention.wqkv`, Baichuan's `W_pack`, Qwen's
    `attn.c_attn`, ChatGLM's `query_key_value`) are adapted under those names, as PEFT on the format's remote code
    names them; an HF-named model keeps its paths."""
    table = getattr(model, "weight_table", None)
    if table is None:
        return lambda key: key
    return lambda key: table.to_checkpoint(key + ".weight")[0][:-len(".weight")]


def _output_embedding_names(model):
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    return {name for name, cell in model.cells_and_names() if head is not None and cell is head}


class LoraTuner:
    """Injects, activates, merges and removes LoRA layers in `.model` (PEFT's BaseTuner/LoraModel logic).

    A plain object: `LoraModel` (below) is this plus a cell holding the model as its child, and the native adapter
    API (integration.py) keeps one on the model itself, where a cell would make the model its own descendant.
    """

    prefix = "lora_"

    def __init__(self, model, peft_config, adapter_name="default", autocast_adapter_dtype=True):
        self.model = model
        self.peft_config = peft_config
        self.active_adapter = adapter_name
        # PEFT's bookkeeping: the module names LoRA adapted (over all adapters, each name once), for inspection
        self.targeted_module_names = []
        self.targeted_parameter_names = []  # (LoRA on parameters, `target_parameters`, is not supported)
        self.inject_adapter(adapter_name, autocast_adapter_dtype)

    # ------------------------------------------------------------------ injection
    def _resolve_targets(self, config):
        if config.target_modules is None:
            model_type = getattr(getattr(self.model, "config", None), "model_type", None)
            if model_type not in DEFAULT_TARGET_MODULES:
                raise ValueError("Please specify `target_modules` in `peft_config`")
            config.target_modules = set(DEFAULT_TARGET_MODULES[model_type])
        if isinstance(config.target_modules, str) and config.target_modules.lower() == INCLUDE_LINEAR_LAYERS_SHORTHAND:
            tuner_prefixes = [n for n, c in self.model.cells_and_names() if _is_tuner(c)]
            linear = {n for n, c in self.model.cells_and_names()
                      if (_is_linear(c) or isinstance(c, LoraLinear))
                      and not any(n.startswith(p + ".") for p in tuner_prefixes)}
            # as PEFT: the output head is never an all-linear target
            named = checkpoint_module_name(self.model)
            config.target_modules = {named(n) for n in linear - _output_embedding_names(self.model)}

    def inject_adapter(self, adapter_name, autocast_adapter_dtype=True):
        config = self.peft_config[adapter_name]
        config.check_supported()
        self._resolve_targets(config)
        heads = _output_embedding_names(self.model)
        named = checkpoint_module_name(self.model)
        targeted = []
        tuner_prefixes = []
        for key, cell in list(self.model.cells_and_names()):
            if not key or any(key.startswith(p + ".") for p in tuner_prefixes):
                continue
            if _is_tuner(cell):
                tuner_prefixes.append(key)
            if not check_target_module_exists(config, named(key)):
                continue
            targeted.append(named(key))
            r, alpha = config.rank_and_alpha(named(key))
            args = (adapter_name, r, alpha, config.lora_dropout, config.init_lora_weights, config.use_rslora,
                    config.lora_bias)
            if isinstance(cell, LoraLinear):
                cell.update_layer(*args, autocast_adapter_dtype)
                continue
            if not _is_linear(cell):
                raise ValueError(f"Target module {key} ({type(cell).__name__}) is not supported. Currently, only "
                                 "`Linear` and `Conv1D` layers are supported.")
            # as PEFT's _create_new_module: the flag follows the layer (and is written so to adapter_config.json)
            if _is_conv1d(cell) and not config.fan_in_fan_out:
                warn_once("fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out "
                          "to True.")
                config.fan_in_fan_out = True
            elif not _is_conv1d(cell) and config.fan_in_fan_out:
                warn_once("fan_in_fan_out is set to True but the target module is a Linear with an [out, in] "
                          "weight. Setting fan_in_fan_out to False.")
                config.fan_in_fan_out = False
            if key in heads:
                # Our causal-LM heads read `lm_head.weight` directly instead of calling the cell.
                raise NotImplementedError(f"LoRA on the output head {key!r} is not supported; train it in full "
                                          f"with modules_to_save=[{key.rpartition('.')[2]!r}] instead")
            parent, _, name = _get_submodules(self.model, key)
            _replace_child(parent, name, LoraLinear(cell, *args, autocast_adapter_dtype=autocast_adapter_dtype))
            tuner_prefixes.append(key)
        if not targeted:
            raise ValueError(f"Target modules {config.target_modules} not found in the base model. Please check the "
                             "target modules and try again.")
        self.targeted_module_names.extend(k for k in targeted if k not in self.targeted_module_names)
        self._set_modules_to_save(config, adapter_name)
        self.set_adapter(adapter_name, inference_mode=config.inference_mode)  # (drops the decode graphs)

    def _set_modules_to_save(self, config, adapter_name):
        if not config.modules_to_save:
            return
        found = False
        lora_prefixes = [n for n, c in self.model.cells_and_names() if isinstance(c, LoraLinear)]
        wrapped = [n for n, c in self.model.cells_and_names() if isinstance(c, ModulesToSaveWrapper)]
        for key, cell in list(self.model.cells_and_names()):
            if not key or not any(key.endswith(t) for t in config.modules_to_save):
                continue
            if any(key.startswith(p + ".") for p in lora_prefixes):
                raise ValueError(f"modules_to_save {config.modules_to_save} matches {key!r}, a part of a LoRA layer. "
                                 f"Please ensure that the adapter name, '{adapter_name}', does not conflict with any "
                                 "of the targeted modules.")
            if any(key.startswith(p + ".") for p in wrapped):
                continue
            if isinstance(cell, ModulesToSaveWrapper):
                cell.update(adapter_name)
            else:
                parent, _, name = _get_submodules(self.model, key)
                _replace_child(parent, name, ModulesToSaveWrapper(cell, adapter_name))
                wrapped.append(key)
            found = True
        if not found:
            raise ValueError(f"Target modules {set(config.modules_to_save)} not found in the base model. Please "
                             "check the target modules and try again.")

    # ------------------------------------------------------------------ adapters
    def tuner_layers(self):
        return [(name, cell) for name, cell in self.model.cells_and_names() if _is_tuner(cell)]

    def set_adapter(self, adapter_name, inference_mode=False):
        """Activate one adapter; its weights (and per `bias`, biases) are the only trainable parameters."""
        config = self.peft_config[adapter_name]
        for _, param in self.model.parameters_and_names():
            param.requires_grad = False
        for _, layer in self.tuner_layers():
            if isinstance(layer, LoraLinear):
                layer.active_adapters = [adapter_name]
                if adapter_name in layer.lora_A and not inference_mode:
                    for table in (layer.lora_A, layer.lora_B):
                        for _, param in table[adapter_name].parameters_and_names():
                            param.requires_grad = True
                    if config.bias == "lora_only" and layer.base_layer.bias is not None:
                        layer.base_layer.bias.requires_grad = True
            else:
                layer.active_adapter = adapter_name
                if adapter_name in layer.modules_to_save and not inference_mode:
                    for _, param in layer.modules_to_save[adapter_name].parameters_and_names():
                        param.requires_grad = True
        if config.bias == "all" and not inference_mode:
            for name, param in self.model.parameters_and_names():
                if name == "bias" or name.endswith(".bias"):
                    param.requires_grad = True
        self.active_adapter = adapter_name
        drop_decode_graphs(self.model)

    def set_adapter_layers(self, enabled):
        for _, layer in self.tuner_layers():
            if isinstance(layer, LoraLinear) and not enabled and layer.merged:
                warn_once("Unmerge the adapters before disabling them: unmerging now")
                layer.unmerge()
            layer.disable_adapters = not enabled
        drop_decode_graphs(self.model)

    def delete_adapter(self, adapter_name):
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} does not exist")
        del self.peft_config[adapter_name]
        for _, layer in self.tuner_layers():
            layer.delete_adapter(adapter_name)
        drop_decode_graphs(self.model)

    # ------------------------------------------------------------------ merge / unload
    def merge_adapter(self, adapter_names=None, safe_merge=False):
        for _, layer in self.tuner_layers():
            if isinstance(layer, LoraLinear):
                layer.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        drop_decode_graphs(self.model)

    def unmerge_adapter(self):
        for _, layer in self.tuner_layers():
            if isinstance(layer, LoraLinear):
                layer.unmerge()
        drop_decode_graphs(self.model)

    def _unload_and_optionally_merge(self, merge, safe_merge=False, adapter_names=None):
        for key, layer in self.tuner_layers():
            parent, _, name = _get_submodules(self.model, key)
            if isinstance(layer, LoraLinear):
                if merge:
                    layer.merge(safe_merge=safe_merge, adapter_names=adapter_names)
                replacement = layer.base_layer
            else:  # PEFT keeps the trained copy of a modules_to_save cell
                replacement = layer.active_module() if not layer.disable_adapters else layer.original_module
            _replace_child(parent, name, replacement)
        sync_parameter_names(self.model)
        drop_decode_graphs(self.model)
        return self.model

    def merge_and_unload(self, progressbar=False, safe_merge=False, adapter_names=None):
        return self._unload_and_optionally_merge(True, safe_merge, adapter_names)

    def unload(self):
        return self._unload_and_optionally_merge(False)


class LoraModel(LoraTuner, nn.Cell):
    """Holds the base model as its child `.model` and tunes it (PEFT's LoraModel)."""

    def __init__(self, model, peft_config, adapter_name="default", autocast_adapter_dtype=True):
        nn.Cell.__init__(self)
        LoraTuner.__init__(self, model, peft_config, adapter_name, autocast_adapter_dtype)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            cells = self.__dict__.get("_cells", {})
            if "model" in cells:
                return getattr(cells["model"], name)
            raise

    def construct(self, *args, **kwargs):
        return self.model(*args, **kwargs)
