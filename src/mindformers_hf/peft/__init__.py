"""LoRA with HF PEFT's API and file format: `from mindformers_hf.peft import LoraConfig, get_peft_model`.

Adapters saved here load in HF `peft` and the other way round (adapter_config.json +
adapter_model.safetensors with PEFT's keys). Only LoRA on `Linear` layers is implemented; other PEFT
methods and LoRA variants raise with the feature's name.
"""
from .auto import AutoPeftModelForCausalLM
from .config import PeftConfig, LoraConfig, PeftType, TaskType
from .lora import LoraLinear, LoraModel, ModulesToSaveWrapper
from .peft_model import (PeftModel, PeftModelForCausalLM, PeftModelForFeatureExtraction, PeftModelForSeq2SeqLM,
                         get_peft_model)
from .save_and_load import get_peft_model_state_dict, set_peft_model_state_dict

__all__ = [
    "AutoPeftModelForCausalLM", "LoraConfig", "LoraLinear", "LoraModel", "ModulesToSaveWrapper", "PeftConfig",
    "PeftModel", "PeftModelForCausalLM", "PeftModelForFeatureExtraction", "PeftModelForSeq2SeqLM", "PeftType",
    "TaskType",
    "get_peft_model", "get_peft_model_state_dict", "set_peft_model_state_dict",
]
