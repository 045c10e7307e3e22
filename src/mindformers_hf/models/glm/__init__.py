from .modeling_glm import (
    GlmForCausalLM,
    GlmForSequenceClassification,
    GlmForTokenClassification,
    GlmModel,
    GlmPreTrainedModel,
)

__all__ = ["GlmForCausalLM", "GlmForSequenceClassification", "GlmForTokenClassification", "GlmModel",
           "GlmPreTrainedModel"]
