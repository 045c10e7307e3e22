from .modeling_llama import (
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
)

__all__ = ["LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaForTokenClassification", "LlamaModel",
           "LlamaPreTrainedModel"]
