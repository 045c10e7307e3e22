"""Auto classes: `model_type` -> "module:Class" tables, imported only when a model is built.

Aliases (checkpoints of another name that our class serves) are table rows, not copies.
"""
import importlib
import os

from ...utils import logger

_LLAMA = "mindformers_hf.models.llama.modeling_llama"

MODEL_MAPPING_NAMES = {
    "llama": f"{_LLAMA}:LlamaModel",
    "qwen2": "mindformers_hf.models.qwen2:Qwen2Model",
    "qwen3": "mindformers_hf.models.qwen3:Qwen3Model",
    "mistral": "mindformers_hf.models.mistral:MistralModel",
    "phi3": "mindformers_hf.models.phi3:Phi3Model",
    "glm": "mindformers_hf.models.glm:GlmModel",
    "glm4": "mindformers_hf.models.glm4:Glm4Model",
    "gpt2": "mindformers_hf.models.gpt2:GPT2Model",
    "mixtral": "mindformers_hf.models.mixtral:MixtralModel",
    "qwen2_moe": "mindformers_hf.models.qwen2_moe:Qwen2MoeModel",
    "qwen3_moe": "mindformers_hf.models.qwen2_moe:Qwen3MoeModel",
    "deepseek_v2": "mindformers_hf.models.deepseek_v2:DeepseekV2Model",
    "deepseek_v3": "mindformers_hf.models.deepseek_v2:DeepseekV3Model",
}
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = {
    "llama": f"{_LLAMA}:LlamaForCausalLM",
    "qwen2": "mindformers_hf.models.qwen2:Qwen2ForCausalLM",
    "qwen3": "mindformers_hf.models.qwen3:Qwen3ForCausalLM",
    "mistral": "mindformers_hf.models.mistral:MistralForCausalLM",
    "phi3": "mindformers_hf.models.phi3:Phi3ForCausalLM",
    "glm": "mindformers_hf.models.glm:GlmForCausalLM",
    "glm4": "mindformers_hf.models.glm4:Glm4ForCausalLM",
    "gpt2": "mindformers_hf.models.gpt2:GPT2LMHeadModel",
    "mixtral": "mindformers_hf.models.mixtral:MixtralForCausalLM",
    "qwen2_moe": "mindformers_hf.models.qwen2_moe:Qwen2MoeForCausalLM",
    "qwen3_moe": "mindformers_hf.models.qwen2_moe:Qwen3MoeForCausalLM",
    "deepseek_v2": "mindformers_hf.models.deepseek_v2:DeepseekV2ForCausalLM",
    "deepseek_v3": "mindformers_hf.models.deepseek_v2:DeepseekV3ForCausalLM",
}


def _import_class(target):
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def load_config(folder, gguf_file=None, **kwargs):
    """transformers' AutoConfig reads config.json (v4 and v5 forms) or GGUF metadata, without tensors."""
    from transformers import AutoConfig

    from ...gguf_io import gguf_metadata_parsing

    if gguf_file:
        with gguf_metadata_parsing():
            return AutoConfig.from_pretrained(folder, gguf_file=gguf_file, **kwargs)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder} has no config.json")
    try:
        return AutoConfig.from_pretrained(folder, **kwargs)
    except (KeyError, ValueError) as e:
        raise ValueError(f"Cannot read the config in {folder}: {e}") from None


class AutoConfig:
    """transformers' AutoConfig (same hub code, cache and classes), except that code from a repo is never
    executed: trust_remote_code is accepted and forced off (see hub.no_remote_code)."""

    def __init__(self, *args, **kwargs):
        raise EnvironmentError("AutoConfig is built with AutoConfig.from_pretrained() or AutoConfig.for_model()")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        from transformers import AutoConfig as HFAutoConfig

        from ...hub import no_remote_code

        with no_remote_code(kwargs, pretrained_model_name_or_path, "AutoConfig"):
            return HFAutoConfig.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @staticmethod
    def for_model(model_type, *args, **kwargs):
        from transformers import AutoConfig as HFAutoConfig

        return HFAutoConfig.for_model(model_type, *args, **kwargs)

    @staticmethod
    def register(model_type, config, exist_ok=False):
        from transformers import AutoConfig as HFAutoConfig

        return HFAutoConfig.register(model_type, config, exist_ok=exist_ok)


class _BaseAutoModelClass:
    _model_mapping: dict = {}

    def __init__(self, *args, **kwargs):
        raise EnvironmentError(f"{type(self).__name__} is built with from_pretrained() or from_config()")

    @classmethod
    def _class_for(cls, config):
        model_type = getattr(config, "model_type", None)
        if model_type in cls._model_mapping:
            return _import_class(cls._model_mapping[model_type])
        known = ", ".join(sorted(cls._model_mapping))
        raise ValueError(
            f"Unrecognized model type {model_type!r} for {cls.__name__}: mindformers_hf has no native "
            f"implementation of it. Supported model types: {known}."
        )

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls._class_for(config).from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        from ...hub import resolve_folder

        config = kwargs.pop("config", None)
        if kwargs.get("trust_remote_code"):
            logger.info("trust_remote_code=True: remote code is never executed; native classes are used")
        if config is None:
            hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "gguf_file",
                                                 "force_download") if k in kwargs}
            folder = resolve_folder(pretrained_model_name_or_path, **hub_kwargs)
            config = load_config(folder, gguf_file=kwargs.get("gguf_file"))
            pretrained_model_name_or_path = folder
        model_class = cls._class_for(config)
        return model_class.from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)

    @classmethod
    def register(cls, config_class, model_class, exist_ok=False):
        """Map a config class (or a model_type string) to a model class or a "module:Class" path."""
        model_type = config_class if isinstance(config_class, str) else config_class.model_type
        if model_type in cls._model_mapping and not exist_ok:
            raise ValueError(f"{model_type!r} is already registered for {cls.__name__}; pass exist_ok=True")
        cls._model_mapping[model_type] = model_class


class AutoModel(_BaseAutoModelClass):
    _model_mapping = MODEL_MAPPING_NAMES


class AutoModelForCausalLM(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
