from .modeling_qwen2 import (
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
    Qwen2Model,
    Qwen2PreTrainedModel,
)

__all__ = ["Qwen2ForCausalLM", "Qwen2ForSequenceClassification", "Qwen2ForTokenClassification", "Qwen2Model",
           "Qwen2PreTrainedModel"]
