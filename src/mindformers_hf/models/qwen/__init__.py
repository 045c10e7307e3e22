"""Qwen v1: the config is tensor-free; the model classes (MindSpore) are imported on first use."""
import importlib

from .configuration_qwen import QWenConfig

_MODELS = ("QWenLMHeadModel", "QWenModel", "QWenPreTrainedModel")
__all__ = ["QWenConfig", *_MODELS]


def __getattr__(name):
    if name in _MODELS:
        return getattr(importlib.import_module(".modeling_qwen", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
