from .modeling_mistral import (
    MistralForCausalLM,
    MistralForSequenceClassification,
    MistralForTokenClassification,
    MistralModel,
    MistralPreTrainedModel,
)

__all__ = ["MistralForCausalLM", "MistralForSequenceClassification", "MistralForTokenClassification",
           "MistralModel", "MistralPreTrainedModel"]
