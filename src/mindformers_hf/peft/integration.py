"""transformers' native adapter API on every model (transformers' `PeftAdapterMixin`, integrations/peft.py).

`model.add_adapter(LoraConfig(...))` / `model.load_adapter(path)` inject LoRA layers into the model itself, with no
`PeftModel` around it: parameter names are the model's own plus PEFT's adapter parts
(`model.layers.0.self_attn.q_proj.lora_A.default.weight`). `save_pretrained` then writes only the active adapter,
in PEFT's files (adapter_config.json + adapter_model.safetensors with `base_model.model.` keys), as transformers
does; such a folder loads in HF peft/transformers and the other way round.

The model holds one `LoraTuner` (lora.py) doing the work; PeftModel's `LoraModel` is the same tuner as a cell.
"""
import os

from ..hub import push_folder_to_hub
from ..safetensors_io import atomic_write_text
from ..utils import warn_once
from .config import CONFIG_NAME, LoraConfig, PeftConfig
from .lora import LoraTuner, sync_parameter_names
from .save_and_load import get_peft_model_state_dict, load_adapter_weights, save_adapter, set_peft_model_state_dict

_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download")


def _check_config(peft_config):
    if not isinstance(peft_config, PeftConfig):
        raise TypeError(f"adapter_config should be an instance of PeftConfig (mindformers_hf.peft). Got "
                        f"{type(peft_config)} instead.")
    if not isinstance(peft_config, LoraConfig):
        raise NotImplementedError(f"{type(peft_config).__name__}: only LoRA (LoraConfig) is supported")


class PeftAdapterMixin:
    """`add_adapter`, `load_adapter`, `set_adapter`, `disable_adapters`/`enable_adapters`, `active_adapters()`,
    `get_adapter_state_dict()`, `delete_adapter` as in transformers; LoRA only (our peft package)."""

    _hf_peft_tuner = None  # the LoraTuner once an adapter was added or loaded

    @property
    def _hf_peft_config_loaded(self):
        return self._hf_peft_tuner is not None

    @property
    def peft_config(self):
        """{adapter name: LoraConfig}; absent (AttributeError) until an adapter is added, as in transformers."""
        if self._hf_peft_tuner is None:
            raise AttributeError(f"{type(self).__name__} has no adapters: no `peft_config` yet")
        return self._hf_peft_tuner.peft_config

    def _require_adapters(self):
        if self._hf_peft_tuner is None:
            raise ValueError("No adapter loaded. Please load an adapter first.")
        return self._hf_peft_tuner

    def _inject(self, peft_config, adapter_name):
        _check_config(peft_config)
        tuner = self._hf_peft_tuner
        if tuner is None:
            # the attribute is set on the instance without Cell registration: the tuner is no sub-cell
            object.__setattr__(self, "_hf_peft_tuner", LoraTuner(self, {adapter_name: peft_config}, adapter_name))
        else:
            tuner.peft_config[adapter_name] = peft_config
            try:
                tuner.inject_adapter(adapter_name)
            except Exception:
                tuner.delete_adapter(adapter_name)
                raise
        sync_parameter_names(self)

    def add_adapter(self, adapter_config, adapter_name=None):
        """Add a new (trainable) adapter and make it the active one."""
        adapter_name = adapter_name or "default"
        if self._hf_peft_tuner is not None and adapter_name in self.peft_config:
            raise ValueError(f"Adapter with name {adapter_name} already exists. Please use a different name.")
        _check_config(adapter_config)
        adapter_config.base_model_name_or_path = getattr(self.config, "name_or_path", None) or None
        self._inject(adapter_config, adapter_name)
        self.set_adapter(adapter_name)

    def load_adapter(self, peft_model_id=None, adapter_name=None, peft_config=None, adapter_state_dict=None,
                     low_cpu_mem_usage=False, is_trainable=False, hotswap="auto", local_files_only=False,
                     adapter_kwargs=None, load_config=None, **kwargs):
        """Load an adapter (ours or PEFT's files, a folder or hub repo, or `peft_config` + `adapter_state_dict`).

        As in transformers, a second adapter is loaded beside the active one without activating it, and a
        non-trainable adapter leaves the model in eval mode with every adapter layer frozen."""
        if load_config is not None:
            raise NotImplementedError("load_config= (transformers' internal loading state) is not supported")
        if low_cpu_mem_usage:
            warn_once("load_adapter: low_cpu_mem_usage is accepted for compatibility and ignored")
        adapter_name = adapter_name or "default"
        hub_kwargs = {**(adapter_kwargs or {}), **kwargs}
        if local_files_only:
            hub_kwargs["local_files_only"] = True
        for key in [k for k in hub_kwargs if k not in _HUB_KWARGS]:
            warn_once(f"load_adapter: keyword {key!r} is accepted for compatibility and ignored")
            hub_kwargs.pop(key)
        exists = self._hf_peft_tuner is not None and adapter_name in self.peft_config
        if hotswap is True and not exists:
            raise ValueError("To hotswap an adapter, there must already be an existing adapter with the same adapter "
                             "name.")
        if exists and hotswap is not True:
            raise ValueError(f"Adapter with name {adapter_name} already exists. Please use a different name.")
        if peft_model_id is None and (adapter_state_dict is None or peft_config is None):
            raise ValueError("You should either pass a `peft_model_id` or a `peft_config` and `adapter_state_dict` to "
                             "load an adapter.")
        path = None if peft_model_id is None else os.fspath(peft_model_id)
        if peft_config is None:
            peft_config = PeftConfig.from_pretrained(path, **hub_kwargs)
        peft_config.inference_mode = not is_trainable
        if exists:
            return self._hotswap(path, adapter_name, peft_config, adapter_state_dict, hub_kwargs)
        previous = None if self._hf_peft_tuner is None else self._hf_peft_tuner.active_adapter
        self._inject(peft_config, adapter_name)
        tuner = self._hf_peft_tuner
        try:
            if adapter_state_dict is None:
                folder = os.path.join(path, hub_kwargs["subfolder"]) if hub_kwargs.get("subfolder") else path
                adapter_state_dict, source = load_adapter_weights(folder, **hub_kwargs)
            else:
                source = "adapter_state_dict"
            set_peft_model_state_dict(self, adapter_state_dict, adapter_name, source=source)
        except Exception:  # nothing of the failed adapter stays; the active one is as it was
            self.delete_adapter(adapter_name)
            if previous is not None:
                tuner.set_adapter(previous, inference_mode=tuner.peft_config[previous].inference_mode)
            raise
        if previous is not None:  # PEFT injects beside the active adapter without switching to the new one
            tuner.set_adapter(previous, inference_mode=tuner.peft_config[previous].inference_mode)
        if peft_config.inference_mode:
            self.eval()
            for _, layer in tuner.tuner_layers():
                for _, param in layer.parameters_and_names():
                    param.requires_grad = False

    def _hotswap(self, path, adapter_name, peft_config, adapter_state_dict, hub_kwargs):
        """load_adapter(hotswap=True): new weights into an existing adapter of the same shape and scaling."""
        _check_config(peft_config)
        old = self.peft_config[adapter_name]
        fields = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora")
        if any(getattr(old, f) != getattr(peft_config, f) for f in fields):
            raise NotImplementedError(f"hotswap of an adapter with another {'/'.join(fields)} is not supported "
                                      "(transformers' enable_peft_hotswap): load it under a new name")
        if adapter_state_dict is None:
            folder = os.path.join(path, hub_kwargs["subfolder"]) if hub_kwargs.get("subfolder") else path
            adapter_state_dict, source = load_adapter_weights(folder, **hub_kwargs)
        else:
            source = "adapter_state_dict"
        set_peft_model_state_dict(self, adapter_state_dict, adapter_name, source=source)  # checks all, then writes
        old.inference_mode = peft_config.inference_mode
        tuner = self._hf_peft_tuner
        if tuner.active_adapter == adapter_name:
            tuner.set_adapter(adapter_name, inference_mode=old.inference_mode)
        if old.inference_mode:
            self.eval()
            for _, layer in tuner.tuner_layers():
                for _, param in layer.parameters_and_names():
                    param.requires_grad = False

    def set_adapter(self, adapter_name):
        """Activate one adapter (trainable, as transformers' set_adapter makes it)."""
        tuner = self._require_adapters()
        if isinstance(adapter_name, (list, tuple)):
            missing = set(adapter_name) - set(tuner.peft_config)
            if missing:
                raise ValueError(f"Following adapter(s) could not be found: {', '.join(sorted(missing))}. Make sure "
                                 f"you are passing the correct adapter name(s). current loaded adapters are: "
                                 f"{list(tuner.peft_config)}")
            if len(adapter_name) != 1:
                raise NotImplementedError("Several active adapters at once are not supported: one at a time")
            adapter_name = adapter_name[0]
        if adapter_name not in tuner.peft_config:
            raise ValueError(f"Adapter with name {adapter_name} not found. Please pass the correct adapter name among "
                             f"{list(tuner.peft_config)}")
        tuner.set_adapter(adapter_name, inference_mode=False)

    def disable_adapters(self):
        """Run the base model alone (the adapter layers stay, frozen) until `enable_adapters()`."""
        tuner = self._require_adapters()
        tuner.set_adapter_layers(enabled=False)
        for _, layer in tuner.tuner_layers():  # as PEFT: disabled adapter weights do not train
            for _, param in layer.parameters_and_names():
                param.requires_grad = False

    def enable_adapters(self):
        """Undo `disable_adapters()`: the active adapter runs and trains again (modules_to_save copies included;
        transformers 5.25 re-enables only the LoRA layers, see docs/differences.md)."""
        tuner = self._require_adapters()
        tuner.set_adapter_layers(enabled=True)
        tuner.set_adapter(tuner.active_adapter, inference_mode=False)

    def active_adapters(self):
        return [self._require_adapters().active_adapter]

    def get_adapter_state_dict(self, adapter_name=None, state_dict=None):
        """{key: Parameter} of one adapter (the active one by default), keys as PEFT's without `base_model.model.`."""
        tuner = self._require_adapters()
        return get_peft_model_state_dict(self, state_dict=state_dict, adapter_name=adapter_name or tuner.active_adapter)

    def delete_adapter(self, adapter_names):
        tuner = self._require_adapters()
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        missing = [name for name in names if name not in tuner.peft_config]
        if missing:
            raise ValueError(f"The following adapter(s) are not present and cannot be deleted: {', '.join(missing)}")
        for name in names:
            tuner.delete_adapter(name)
        if not tuner.peft_config:
            object.__setattr__(self, "_hf_peft_tuner", None)
        elif tuner.active_adapter not in tuner.peft_config:
            tuner.set_adapter(next(iter(tuner.peft_config)))
        sync_parameter_names(self)

    def _save_adapter_pretrained(self, save_directory, is_main_process=True, state_dict=None, push_to_hub=False,
                                 **kwargs):
        """save_pretrained of a model with adapters, as transformers: adapter_config.json and
        adapter_model.safetensors of the active adapter (plus generation_config.json), no base weights."""
        hub_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "commit_description", "token",
                                                 "private", "revision", "create_pr") if push_to_hub and k in kwargs}
        for key in kwargs:
            warn_once(f"save_pretrained: keyword {key!r} is accepted for compatibility and ignored")
        if not is_main_process:
            return
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained needs a folder, {save_directory} is a file")
        os.makedirs(save_directory, exist_ok=True)
        if self.can_generate():
            atomic_write_text(os.path.join(save_directory, "generation_config.json"),
                              self.generation_config.to_json_string())
        save_adapter(self, self._hf_peft_tuner.active_adapter, save_directory, state_dict=state_dict)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
            push_folder_to_hub(save_directory, repo_id, **{"commit_message": "Upload model", **hub_kwargs})


def has_adapter(folder):
    return os.path.isfile(os.path.join(folder, CONFIG_NAME))


def load_base_and_adapter(auto_cls, location, model_args, kwargs, load_config):
    """transformers' from_pretrained of an adapter folder or repo: the base model named in adapter_config.json (or
    the model in the same folder, when it has its own config.json), then `load_adapter` of the adapter."""
    kwargs = dict(kwargs)
    adapter_name = kwargs.pop("adapter_name", None) or "default"
    adapter_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    adapter_kwargs.update(kwargs.pop("adapter_kwargs", None) or {})
    folder = location.folder
    if os.path.isfile(os.path.join(folder, "config.json")):  # a complete model with an adapter beside it
        model = auto_cls.from_pretrained(location, *model_args, config=load_config(folder), **kwargs)
    else:
        base = PeftConfig.from_pretrained(folder).base_model_name_or_path
        if not base:
            raise ValueError(f"{location.name}: adapter_config.json names no base_model_name_or_path and there is no "
                             "config.json: load the base model and call model.load_adapter(path)")
        kwargs.pop("subfolder", None)  # the subfolder was the adapter's
        model = auto_cls.from_pretrained(base, *model_args, **kwargs)
    source = location.name if location.hub is not None else location.root
    model.load_adapter(source, adapter_name=adapter_name, **adapter_kwargs)
    return model
