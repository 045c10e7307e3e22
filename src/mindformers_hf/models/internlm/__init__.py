"""InternLM v1: the config is tensor-free; the model classes (MindSpore) are imported on first use."""
import importlib

from .configuration_internlm import InternLMConfig

_MODELS = ("InternLMForCausalLM", "InternLMModel", "InternLMPreTrainedModel")
__all__ = ["InternLMConfig", *_MODELS]


def __getattr__(name):
    if name in _MODELS:
        return getattr(importlib.import_module(".modeling_internlm", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
