"""PeftModel: the base model with LoRA adapters, PEFT's API and PEFT's files.

`PeftModel.base_model` is a `LoraModel` whose `.model` is the base model, so parameter names are PEFT's
(`base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`). Calling the PeftModel calls
the base model with the same arguments; everything the base model has (`config`, `generate`,
`generation_config`, `get_input_embeddings`, ...) is reachable through the PeftModel.
"""
import contextlib
import os

from mindspore import nn

from ..utils import warn_once
from .config import LoraConfig, PeftConfig, TaskType
from .lora import LoraModel, sync_parameter_names
from .save_and_load import load_adapter_weights, save_adapter, set_peft_model_state_dict

_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder")


class PeftModel(nn.Cell):
    def __init__(self, model, peft_config, adapter_name="default", autocast_adapter_dtype=True,
                 low_cpu_mem_usage=False):
        super().__init__(auto_prefix=True)
        if not isinstance(peft_config, LoraConfig):
            raise NotImplementedError(f"{type(peft_config).__name__}: only LoRA (LoraConfig) is supported")
        if low_cpu_mem_usage:
            warn_once("PeftModel: low_cpu_mem_usage is accepted for compatibility and ignored")
        self._autocast_adapter_dtype = autocast_adapter_dtype
        self.base_model = LoraModel(model, {adapter_name: peft_config}, adapter_name, autocast_adapter_dtype)
        sync_parameter_names(self)

    # ------------------------------------------------------------------ HF surface
    def __getattr__(self, name):
        """Forward missing attributes to the LoraModel, and from there to the base model (as PEFT does)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            cells = self.__dict__.get("_cells", {})
            if name != "base_model" and "base_model" in cells:
                return getattr(cells["base_model"], name)
            raise

    @property
    def peft_config(self):
        return self.base_model.peft_config

    @property
    def active_adapter(self):
        return self.base_model.active_adapter

    @property
    def active_adapters(self):
        return [self.base_model.active_adapter]

    @property
    def active_peft_config(self):
        return self.peft_config[self.active_adapter]

    @property
    def config(self):
        return self.get_base_model().config

    @property
    def generation_config(self):
        return self.get_base_model().generation_config

    @generation_config.setter
    def generation_config(self, value):
        self.get_base_model().generation_config = value

    def get_base_model(self):
        return self.base_model.model

    def __call__(self, *args, **kwargs):
        return self.construct(*args, **kwargs)

    def construct(self, *args, **kwargs):
        # the base model's __call__ converts numpy/torch inputs and returns outputs of the caller's kind
        return self.get_base_model()(*args, **kwargs)

    # nn.Cell has its own `to`; PEFT users mean the transformers one (device no-op, dtype cast)
    def to(self, *args, **kwargs):
        self.get_base_model().to(*args, **kwargs)
        return self

    def named_parameters(self):
        """(PEFT name, Parameter) pairs: `base_model.model.<HF name>`, `...lora_A.<adapter>.weight`."""
        return list(self.parameters_and_names())

    def parameters(self):
        return [p for _, p in self.parameters_and_names()]

    def train(self, mode=True):
        self.set_train(mode)
        return self

    def eval(self):
        self.set_train(False)
        return self

    def get_nb_trainable_parameters(self):
        trainable, total = 0, 0
        for _, param in self.parameters_and_names():
            count = int(param.size)
            total += count
            if param.requires_grad:
                trainable += count
        return trainable, total

    def print_trainable_parameters(self):
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")

    def num_parameters(self, only_trainable=False, exclude_embeddings=False):
        return self.get_base_model().num_parameters(only_trainable=only_trainable,
                                                    exclude_embeddings=exclude_embeddings)

    # ------------------------------------------------------------------ adapters
    def add_adapter(self, adapter_name, peft_config, low_cpu_mem_usage=False):
        if adapter_name in self.peft_config:
            raise ValueError(f"Adapter {adapter_name!r} already exists")
        if not isinstance(peft_config, LoraConfig):
            raise NotImplementedError(f"{type(peft_config).__name__}: only LoRA (LoraConfig) is supported")
        active = self.active_adapter
        self.peft_config[adapter_name] = peft_config
        try:
            self.base_model.inject_adapter(adapter_name, self._autocast_adapter_dtype)
        except Exception:
            self.base_model.delete_adapter(adapter_name)
            raise
        # PEFT adds an adapter without activating it
        self.base_model.set_adapter(active, inference_mode=self.peft_config[active].inference_mode)
        sync_parameter_names(self)

    def set_adapter(self, adapter_name):
        if adapter_name not in self.peft_config:
            raise ValueError(f"Adapter {adapter_name} not found.")
        self.base_model.set_adapter(adapter_name, inference_mode=self.peft_config[adapter_name].inference_mode)

    def delete_adapter(self, adapter_name):
        if adapter_name == self.active_adapter and len(self.peft_config) > 1:
            raise ValueError("Delete the active adapter after activating another one (set_adapter)")
        self.base_model.delete_adapter(adapter_name)
        sync_parameter_names(self)

    @contextlib.contextmanager
    def disable_adapter(self):
        """Run the base model alone inside the block (adapters merged into weights are unmerged first)."""
        self.base_model.set_adapter_layers(enabled=False)
        try:
            yield
        finally:
            self.base_model.set_adapter_layers(enabled=True)

    def merge_adapter(self, adapter_names=None, safe_merge=False):
        self.base_model.merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self):
        self.base_model.unmerge_adapter()

    def merge_and_unload(self, progressbar=False, safe_merge=False, adapter_names=None):
        """The base model with the active adapter added into its weights (W + scaling * B @ A), LoRA layers gone."""
        return self.base_model.merge_and_unload(progressbar=progressbar, safe_merge=safe_merge,
                                                adapter_names=adapter_names)

    def unload(self):
        """The base model with the LoRA layers removed, weights untouched."""
        return self.base_model.unload()

    # ------------------------------------------------------------------ files
    def save_pretrained(self, save_directory, safe_serialization=True, selected_adapters=None,
                        save_embedding_layers="auto", is_main_process=True,
                        path_initial_model_for_weight_conversion=None, **kwargs):
        """Write adapter_config.json + adapter_model.safetensors (non-default adapters in a subfolder each)."""
        if os.path.isfile(save_directory):
            raise ValueError(f"Provided path ({save_directory}) should be a directory, not a file")
        if not safe_serialization:
            raise NotImplementedError("safe_serialization=False (adapter_model.bin) is not supported: we write "
                                      "safetensors")
        if path_initial_model_for_weight_conversion is not None:
            raise NotImplementedError("path_initial_model_for_weight_conversion (PiSSA/OLoRA conversion) is not "
                                      "supported")
        if save_embedding_layers is True:
            raise NotImplementedError("save_embedding_layers=True is not supported: embeddings are not resized here")
        state_dict = kwargs.pop("state_dict", None)
        for key in kwargs:
            warn_once(f"PeftModel.save_pretrained: keyword {key!r} is accepted for compatibility and ignored")
        if selected_adapters is None:
            selected_adapters = list(self.peft_config)
        unknown = set(selected_adapters) - set(self.peft_config)
        if unknown:
            raise ValueError(f"You passed an invalid `selected_adapters` arguments, current supported adapter names "
                             f"are {list(self.peft_config)} - got {sorted(unknown)}.")
        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        for adapter_name in selected_adapters:
            config = self.peft_config[adapter_name]
            folder = save_directory if adapter_name == "default" else os.path.join(save_directory, adapter_name)
            if config.base_model_name_or_path is None:
                config.base_model_name_or_path = getattr(self.config, "name_or_path", None) or None
            save_adapter(self, adapter_name, folder, state_dict=state_dict,
                         auto_mapping_dict=None if config.task_type is not None else self._auto_mapping())

    def _auto_mapping(self):
        """PEFT's `auto_mapping` for adapters without a task_type: the base class and its transformers module
        (ours mirror transformers' layout, `mindformers_hf.models.<type>.modeling_<type>`)."""
        cls = type(self.get_base_model())
        module = cls.__module__
        if module.startswith("mindformers_hf.models."):
            module = "transformers." + module[len("mindformers_hf."):]
        return {"base_model_class": cls.__name__, "parent_library": module}

    @classmethod
    def from_pretrained(cls, model, model_id, adapter_name="default", is_trainable=False, config=None,
                        autocast_adapter_dtype=True, ephemeral_gpu_offload=False, low_cpu_mem_usage=False,
                        key_mapping=None, **kwargs):
        """Wrap `model` and load the adapter saved in `model_id` (ours or HF PEFT's)."""
        if key_mapping:
            raise NotImplementedError("key_mapping is not supported for adapters")
        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        for key in kwargs:
            warn_once(f"PeftModel.from_pretrained: keyword {key!r} is accepted for compatibility and ignored")
        if config is None:
            config = PeftConfig.from_pretrained(os.fspath(model_id), **hub_kwargs)
        config.inference_mode = not is_trainable
        target_cls = cls
        if cls is PeftModel:
            target_cls = _peft_model_class(config.task_type)
        peft_model = target_cls(model, config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        peft_model._load_adapter_weights(model_id, adapter_name, hub_kwargs)
        return peft_model

    def load_adapter(self, model_id, adapter_name, is_trainable=False, torch_device=None,
                     autocast_adapter_dtype=True, ephemeral_gpu_offload=False, low_cpu_mem_usage=False, **kwargs):
        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        for key in kwargs:
            warn_once(f"PeftModel.load_adapter: keyword {key!r} is accepted for compatibility and ignored")
        if adapter_name not in self.peft_config:
            config = PeftConfig.from_pretrained(os.fspath(model_id), **hub_kwargs)
            config.inference_mode = not is_trainable
            self.add_adapter(adapter_name, config)
        self._load_adapter_weights(model_id, adapter_name, hub_kwargs)

    def _load_adapter_weights(self, model_id, adapter_name, hub_kwargs):
        path = os.fspath(model_id)
        if hub_kwargs.get("subfolder"):
            path = os.path.join(path, hub_kwargs["subfolder"])
        weights, file = load_adapter_weights(path, **hub_kwargs)
        set_peft_model_state_dict(self, weights, adapter_name, source=file)


class PeftModelForCausalLM(PeftModel):
    def construct(self, *args, task_ids=None, adapter_names=None, **kwargs):
        if task_ids is not None:
            warn_once("PeftModelForCausalLM: task_ids (multitask prompt tuning) is ignored for LoRA")
        if adapter_names is not None:
            raise NotImplementedError("adapter_names (mixed-adapter batches) is not supported")
        return self.get_base_model()(*args, **kwargs)


class PeftModelForSeq2SeqLM(PeftModel):
    """Encoder-decoder models (Whisper). Only the arguments the caller passes reach the base model: PEFT 0.21.2
    also passes `input_ids=None` / `inputs_embeds=None`, which Whisper's forward rejects (docs/differences.md)."""

    def construct(self, *args, task_ids=None, adapter_names=None, **kwargs):
        if task_ids is not None:
            warn_once("PeftModelForSeq2SeqLM: task_ids (multitask prompt tuning) is ignored for LoRA")
        if adapter_names is not None:
            raise NotImplementedError("adapter_names (mixed-adapter batches) is not supported")
        return self.get_base_model()(*args, **kwargs)


class PeftModelForFeatureExtraction(PeftModel):
    pass


def _peft_model_class(task_type):
    if task_type is None:
        return PeftModel
    mapping = {TaskType.CAUSAL_LM: PeftModelForCausalLM, TaskType.SEQ_2_SEQ_LM: PeftModelForSeq2SeqLM,
               TaskType.FEATURE_EXTRACTION: PeftModelForFeatureExtraction}
    if task_type not in mapping:
        raise NotImplementedError(f"task_type={task_type!r} is not supported: use CAUSAL_LM, SEQ_2_SEQ_LM, "
                                  "FEATURE_EXTRACTION or None")
    return mapping[task_type]


def get_peft_model(model, peft_config, adapter_name="default", mixed=False, autocast_adapter_dtype=True,
                   revision=None, low_cpu_mem_usage=False):
    """Wrap `model` with a new adapter described by `peft_config` (PEFT's get_peft_model)."""
    if mixed:
        raise NotImplementedError("mixed=True (PeftMixedModel) is not supported")
    if isinstance(model, PeftModel):
        raise ValueError("The model is already a PeftModel: use model.add_adapter(name, config) to add an adapter")
    name_or_path = getattr(getattr(model, "config", None), "name_or_path", None)
    peft_config.base_model_name_or_path = name_or_path or None
    if revision is not None:
        peft_config.revision = revision
    cls = _peft_model_class(peft_config.task_type)
    return cls(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
               low_cpu_mem_usage=low_cpu_mem_usage)
