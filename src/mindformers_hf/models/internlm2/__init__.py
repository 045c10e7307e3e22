"""InternLM2: the config is tensor-free; the model classes (MindSpore) are imported on first use."""
import importlib

from .configuration_internlm2 import InternLM2Config

_MODELS = ("InternLM2ForCausalLM", "InternLM2Model", "InternLM2PreTrainedModel")
__all__ = ["InternLM2Config", *_MODELS]


def __getattr__(name):
    if name in _MODELS:
        return getattr(importlib.import_module(".modeling_internlm2", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
