"""LoraConfig with PEFT's field names, defaults and adapter_config.json format (written without torch).

`import peft` imports torch, so this is our own dataclass. Its fields are PEFT 0.21's, in PEFT's order, so
a saved adapter_config.json loads in HF `peft` and one written by HF `peft` loads here. Fields for PEFT
features we do not implement are kept (so files round-trip) and rejected with the feature's name when they
hold anything but their default.
"""
import enum
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Union

from ..safetensors_io import atomic_write_text
from ..utils import warn_once

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_WEIGHTS_NAME = "adapter_model.safetensors"
# The PEFT release whose file format we write; recorded as `peft_version` as PEFT records its own.
PEFT_FORMAT_VERSION = "0.21.2"
INCLUDE_LINEAR_LAYERS_SHORTHAND = "all-linear"

# PEFT's defaults when `target_modules` is None (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING in its
# utils/constants.py), for the families we serve; a model_type without an entry has no default, as in PEFT.
DEFAULT_TARGET_MODULES = {
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "mixtral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"], "gemma3_text": ["q_proj", "v_proj"], "stablelm": ["q_proj", "v_proj"],
    "phi": ["q_proj", "v_proj", "fc1", "fc2"], "gpt2": ["c_attn"], "chatglm": ["query_key_value"],
}


class _StrEnum(str, enum.Enum):
    def __str__(self):
        return self.value


class PeftType(_StrEnum):
    LORA = "LORA"


class TaskType(_StrEnum):
    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


@dataclass
class PeftConfig:
    task_type: Optional[Union[str, TaskType]] = None
    peft_type: Optional[Union[str, PeftType]] = None
    auto_mapping: Optional[dict] = None
    peft_version: Optional[str] = None
    base_model_name_or_path: Optional[str] = None
    revision: Optional[str] = None
    inference_mode: bool = False

    def __post_init__(self):
        if self.task_type is not None and self.task_type not in list(TaskType):
            raise ValueError(f"Invalid task type: '{self.task_type}'. Must be one of the following task types: "
                             f"{', '.join(TaskType)}.")
        if self.peft_version is None:
            self.peft_version = PEFT_FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def save_pretrained(self, save_directory, **kwargs):
        if os.path.isfile(save_directory):
            raise AssertionError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        out = self.to_dict()
        for key, value in out.items():
            if isinstance(value, set):
                out[key] = sorted(value)
            elif isinstance(value, enum.Enum):
                out[key] = value.value
        if kwargs.get("auto_mapping_dict") is not None:
            out["auto_mapping"] = kwargs["auto_mapping_dict"]
        atomic_write_text(os.path.join(save_directory, CONFIG_NAME), json.dumps(out, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **kwargs):
        path = os.path.join(pretrained_model_name_or_path, subfolder) if subfolder else pretrained_model_name_or_path
        config_file = _resolve_file(path, CONFIG_NAME, subfolder=subfolder, **kwargs)
        with open(config_file, encoding="utf-8") as f:
            loaded = json.load(f)
        loaded.pop("runtime_config", None)  # PEFT drops it too: runtime-only settings
        return cls.from_peft_type(**loaded)

    @classmethod
    def from_peft_type(cls, **kwargs):
        peft_type = kwargs.get("peft_type")
        config_cls = cls
        if peft_type is not None:
            if str(peft_type) != PeftType.LORA:
                raise NotImplementedError(f"PEFT method {peft_type!r} is not supported: only LoRA is implemented")
            config_cls = LoraConfig
        known = {f.name for f in fields(config_cls) if f.init}
        unknown = sorted(set(kwargs) - known)
        if unknown:  # a newer PEFT wrote it; PEFT itself drops such keys with a warning
            warn_once(f"Unexpected keyword arguments {unknown} for class {config_cls.__name__}, these are ignored "
                      "(the adapter config was written by a newer PEFT version)")
        return config_cls(**{k: v for k, v in kwargs.items() if k in known})


@dataclass
class LoraConfig(PeftConfig):
    r: int = 8
    target_modules: Optional[Union[list, str]] = None
    exclude_modules: Optional[Union[list, str]] = None
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    modules_to_save: Optional[list] = None
    init_lora_weights: Union[bool, str] = True
    layers_to_transform: Optional[Union[list, int]] = None
    layers_pattern: Optional[Union[list, str]] = None
    rank_pattern: Optional[dict] = field(default_factory=dict)
    alpha_pattern: Optional[dict] = field(default_factory=dict)
    megatron_config: Optional[dict] = None
    megatron_core: Optional[str] = "megatron.core"
    trainable_token_indices: Optional[Union[list, dict]] = None
    loftq_config: Union[dict] = field(default_factory=dict)
    eva_config: Optional[dict] = None
    corda_config: Optional[dict] = None
    lora_ga_config: Optional[dict] = None
    use_dora: bool = False
    velora_config: Optional[dict] = None
    alora_invocation_tokens: Optional[list] = None
    use_qalora: bool = False
    qalora_group_size: int = 16
    monteclora_config: Optional[dict] = None
    layer_replication: Optional[list] = None
    lora_bias: bool = False
    target_parameters: Optional[list] = None
    use_bdlora: Optional[dict] = None
    arrow_config: Optional[dict] = None
    kasa_config: Optional[dict] = None
    ensure_weight_tying: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.LORA
        # PEFT keeps list targets as sets; they are written back as (sorted) lists.
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, (list, tuple)):
            self.exclude_modules = set(self.exclude_modules)
        if self.task_type is not None:
            self.task_type = TaskType(self.task_type)
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            raise ValueError("`layers_to_transform` cannot be used when `target_modules` is a str.")
        if isinstance(self.target_modules, str) and self.layers_pattern is not None:
            raise ValueError("`layers_pattern` cannot be used when `target_modules` is a str.")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("When `layers_pattern` is specified, `layers_to_transform` must also be specified. ")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"bias={self.bias!r}: must be 'none', 'all' or 'lora_only'")
        if self.lora_bias and self.init_lora_weights not in (True, False):
            raise ValueError("The argument lora_bias=True is only supported with init_lora_weights=True or False, "
                             f"got init_lora_weights={self.init_lora_weights} instead.")

    def check_supported(self):
        """Raise, naming the feature, for PEFT options this implementation does not have."""
        unsupported = {
            "use_dora": "DoRA", "megatron_config": "Megatron layers", "trainable_token_indices": "trainable tokens",
            "eva_config": "EVA initialisation", "corda_config": "CorDA initialisation",
            "lora_ga_config": "LoRA-GA initialisation", "velora_config": "VeLoRA",
            "alora_invocation_tokens": "aLoRA", "use_qalora": "QALoRA", "monteclora_config": "MonteCLoRA",
            "layer_replication": "layer replication", "target_parameters": "LoRA on nn.Parameter targets",
            "use_bdlora": "BD-LoRA", "arrow_config": "Arrow routing", "kasa_config": "KaSA",
            "ensure_weight_tying": "ensure_weight_tying",
        }
        for name, feature in unsupported.items():
            if getattr(self, name):
                raise NotImplementedError(f"LoraConfig.{name}: {feature} is not supported by mindformers_hf.peft")
        if self.init_lora_weights not in (True, False) and str(self.init_lora_weights).lower() != "gaussian":
            raise NotImplementedError(f"init_lora_weights={self.init_lora_weights!r} is not supported: use True "
                                      "(PEFT's default), False or 'gaussian'")

    def scaling_for(self, r, alpha):
        return alpha / (r ** 0.5) if self.use_rslora else alpha / r

    def rank_and_alpha(self, module_name):
        """The rank and alpha for one module: rank_pattern / alpha_pattern keys match as in PEFT's get_pattern_key."""
        r_key = _pattern_key(self.rank_pattern or {}, module_name)
        a_key = _pattern_key(self.alpha_pattern or {}, module_name)
        r = (self.rank_pattern or {}).get(r_key, self.r)
        alpha = (self.alpha_pattern or {}).get(a_key, self.lora_alpha)
        return r, alpha


def _pattern_key(pattern_keys, key_to_match):
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", key_to_match):
            return key
    return key_to_match


def _resolve_file(path, file_name, subfolder=None, revision=None, cache_dir=None, token=None,
                  local_files_only=False, **_ignored):
    """A local file, or one fetched from the Hub when `path` is a repo id."""
    local = os.path.join(path, file_name)
    if os.path.isfile(local):
        return local
    if os.path.isdir(path):
        raise FileNotFoundError(f"Can't find '{file_name}' at '{path}'")
    from huggingface_hub import hf_hub_download

    repo_id = path if subfolder is None else path[: -len(subfolder) - 1]
    try:
        return hf_hub_download(repo_id, file_name, subfolder=subfolder, revision=revision, cache_dir=cache_dir,
                               token=token, local_files_only=local_files_only)
    except Exception as e:
        raise ValueError(f"Can't find '{file_name}' at '{path}': {e}") from None
