"""Auto classes: `model_type` -> "module:Class" tables, imported only when a model is built."""
import os

from ...hub import RemoteCodeError, locate, no_remote_code, resolve_folder
from ...peft.integration import has_adapter, load_base_and_adapter
from ...utils import logger
from .. import families
from ..families import remote_format
from ..family import import_object as _import_class

# model_type -> "module:Class" for each auto class, derived from the families' declarations (models/families.py).
# Aliases (checkpoints of another name that our class serves) are declarations, not copies. register() adds rows.
MODEL_MAPPING_NAMES = families.auto_mapping("Model")
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = families.auto_mapping("ForCausalLM")
MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES = families.auto_mapping("ForSequenceClassification")
MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES = families.auto_mapping("ForTokenClassification")
MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES = families.auto_mapping("ForSpeechSeq2Seq")
MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES = families.auto_mapping("ForImageTextToText")

# Formats whose Hub repos need trust_remote_code (transformers has no class for their model_type): our config
# classes read their config.json with the repos' field names, and the native classes above run them. The
# architecture a config names decides first (some InternLM2 repos kept model_type "internlm").
REMOTE_FORMAT_CONFIG_NAMES = families.remote_format_configs()
REMOTE_FORMAT_ARCHITECTURES = families.remote_format_architectures()


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
        config = kwargs.pop("config", None)
        if kwargs.get("trust_remote_code"):
            logger.info("trust_remote_code=True: remote code is never executed; native classes are used")
        if config is None:
            # only the small files first: a model_type we have no class for is refused before any weight download
            hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "gguf_file",
                                                 "force_download", "subfolder", "variant") if k in kwargs}
            pretrained_model_name_or_path = locate(pretrained_model_name_or_path, **hub_kwargs)
            if has_adapter(pretrained_model_name_or_path.folder):  # transformers: load the base, then the adapter
                return load_base_and_adapter(cls, pretrained_model_name_or_path, model_args, kwargs, load_config)
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


class AutoModelForImageTextToText(_BaseAutoModelClass):
    _model_mapping = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
