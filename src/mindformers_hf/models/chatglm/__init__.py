"""ChatGLM2/3, GLM-4 (chatglm format): the config is tensor-free; the model classes (MindSpore) are imported
on first use."""
import importlib

from .configuration_chatglm import ChatGLMConfig

_MODELS = ("ChatGLMForConditionalGeneration", "ChatGLMModel", "ChatGLMPreTrainedModel")
__all__ = ["ChatGLMConfig", *_MODELS]


def __getattr__(name):
    if name in _MODELS:
        return getattr(importlib.import_module(".modeling_chatglm", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
