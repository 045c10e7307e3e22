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
    "internlm": "mindformers_hf.models.internlm:InternLMModel",
    "internlm2": "mindformers_hf.models.internlm2:InternLM2Model",
    "baichuan": "mindformers_hf.models.baichuan:BaichuanModel",
    "chatglm": "mindformers_hf.models.chatglm:ChatGLMForConditionalGeneration",  # the repos' AutoModel
    "qwen": "mindformers_hf.models.qwen:QWenModel",
    "whisper": "mindformers_hf.models.whisper:WhisperModel",
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
    "internlm": "mindformers_hf.models.internlm:InternLMForCausalLM",
    "internlm2": "mindformers_hf.models.internlm2:InternLM2ForCausalLM",
    "baichuan": "mindformers_hf.models.baichuan:BaichuanForCausalLM",
    "chatglm": "mindformers_hf.models.chatglm:ChatGLMForConditionalGeneration",
    "qwen": "mindformers_hf.models.qwen:QWenLMHeadModel",
}

MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES = {
    "whisper": "mindformers_hf.models.whisper:WhisperForConditionalGeneration",
}

# Task heads (modeling_heads.py) of the LLaMA-shaped families and GPT-2
_HEAD_FAMILIES = {"llama": f"{_LLAMA}:Llama", "qwen2": "mindformers_hf.models.qwen2:Qwen2",
                  "qwen3": "mindformers_hf.models.qwen3:Qwen3", "mistral": "mindformers_hf.models.mistral:Mistral",
                  "phi3": "mindformers_hf.models.phi3:Phi3", "glm": "mindformers_hf.models.glm:Glm",
                  "glm4": "mindformers_hf.models.glm4:Glm4", "gpt2": "mindformers_hf.models.gpt2:GPT2",
                  "mixtral": "mindformers_hf.models.mixtral:Mixtral",
                  "qwen2_moe": "mindformers_hf.models.qwen2_moe:Qwen2Moe",
                  "qwen3_moe": "mindformers_hf.models.qwen2_moe:Qwen3Moe",
                  "deepseek_v2": "mindformers_hf.models.deepseek_v2:DeepseekV2",
                  "deepseek_v3": "mindformers_hf.models.deepseek_v2:DeepseekV3"}
MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES = {
    model_type: f"{path}ForSequenceClassification" for model_type, path in _HEAD_FAMILIES.items()}
MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES = {  # (transformers has no DeepseekV2ForTokenClassification)
    model_type: f"{path}ForTokenClassification" for model_type, path in _HEAD_FAMILIES.items()
    if model_type != "deepseek_v2"}

# Formats whose Hub repos need trust_remote_code (transformers has no class for their model_type): our config
# classes read their config.json with the repos' field names, and the native classes above run them. The
# architecture a config names decides first (some InternLM2 repos kept model_type "internlm").
REMOTE_FORMAT_CONFIG_NAMES = {
    "internlm": "mindformers_hf.models.internlm:InternLMConfig",
    "internlm2": "mindformers_hf.models.internlm2:InternLM2Config",
    "baichuan": "mindformers_hf.models.baichuan:BaichuanConfig",
    "chatglm": "mindformers_hf.models.chatglm:ChatGLMConfig",
    "qwen": "mindformers_hf.models.qwen:QWenConfig",
}
REMOTE_FORMAT_ARCHITECTURES = {
    "InternLMForCausalLM": "internlm",
    "InternLM2ForCausalLM": "internlm2",
    "BaichuanForCausalLM": "baichuan",
    "BaiChuanForCausalLM": "baichuan",
    "ChatGLMModel": "chatglm",
    "ChatGLMForConditionalGeneration": "chatglm",
    "QWenLMHeadModel": "qwen",
}


def _import_class(target):
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def remote_format(config_dict):
    """The model_type of our native class for a config.json only a repo's own code could read, else None."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if not isinstance(config_dict, dict) or config_dict.get("model_type") in CONFIG_MAPPING_NAMES:
        return None
    for architecture in config_dict.get("architectures") or []:
        if architecture in REMOTE_FORMAT_ARCHITECTURES:
            return REMOTE_FORMAT_ARCHITECTURES[architecture]
    model_type = config_dict.get("model_type")
    return model_type if model_type in REMOTE_FORMAT_CONFIG_NAMES else None


def remote_format_config(config_dict, **kwargs):
    """Our config object for such a config.json (see REMOTE_FORMAT_CONFIG_NAMES), else None."""
    model_type = remote_format(config_dict)
    if model_type is None:
        return None
    return _import_class(REMOTE_FORMAT_CONFIG_NAMES[model_type]).from_dict(config_dict, **kwargs)


def load_config(folder, gguf_file=None, **kwargs):
    """transformers' AutoConfig reads config.json (v4 and v5 forms) or GGUF metadata, without tensors;
    configs of the remote-code formats above are read by our config classes."""
    import json

    from transformers import AutoConfig

    if gguf_file:
        from ...gguf_metadata import gguf_config

        return gguf_config(os.path.join(folder, gguf_file), name_or_path=folder, **kwargs)
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} has no config.json")
    try:
        with open(path, encoding="utf-8") as f:
            native = remote_format_config(json.load(f), **kwargs)
    except json.JSONDecodeError:  # transformers' error below names the problem
        native = None
    if native is not None:
        return native
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

        from ...hub import RemoteCodeError, no_remote_code, resolve_folder

        if kwargs.get("gguf_file"):  # read by our GGUF metadata reader: transformers' imports torch
            hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only", "token",
                                                     "force_download") if k in kwargs}
            kwargs.pop("trust_remote_code", None)
            folder = resolve_folder(pretrained_model_name_or_path, gguf_file=kwargs["gguf_file"], **hub_kwargs)
            return load_config(folder, **kwargs)
        try:
            with no_remote_code(kwargs, pretrained_model_name_or_path, "AutoConfig"):
                return HFAutoConfig.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (RemoteCodeError, ValueError) as error:
            # transformers has no class for this model_type: one of the remote-code formats we read natively?
            from transformers import PretrainedConfig

            hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token",
                                                 "force_download") if k in kwargs}
            try:
                config_dict, _ = PretrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            except (OSError, ValueError):
                config_dict = None
            native = remote_format_config(config_dict)
            if native is None:
                raise error
            return native

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
        from ...hub import locate

        config = kwargs.pop("config", None)
        if kwargs.get("trust_remote_code"):
            logger.info("trust_remote_code=True: remote code is never executed; native classes are used")
        if config is None:
            # only the small files first: a model_type we have no class for is refused before any weight download
            hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "gguf_file",
                                                 "force_download", "subfolder", "variant") if k in kwargs}
            pretrained_model_name_or_path = locate(pretrained_model_name_or_path, **hub_kwargs)
            config = load_config(pretrained_model_name_or_path.folder, gguf_file=kwargs.get("gguf_file"))
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


class AutoModelForSequenceClassification(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES


class AutoModelForTokenClassification(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES


class AutoModelForSpeechSeq2Seq(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES
