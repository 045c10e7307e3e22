"""Baichuan / Baichuan2: the config is tensor-free; the model classes (MindSpore) are imported on first use."""
import importlib

from .configuration_baichuan import BaichuanConfig

_MODELS = ("BaichuanForCausalLM", "BaichuanModel", "BaichuanPreTrainedModel", "alibi_slopes")
__all__ = ["BaichuanConfig", *_MODELS]


def __getattr__(name):
    if name in _MODELS:
        return getattr(importlib.import_module(".modeling_baichuan", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
