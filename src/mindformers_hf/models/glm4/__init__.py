from .modeling_glm4 import (
    Glm4ForCausalLM,
    Glm4ForSequenceClassification,
    Glm4ForTokenClassification,
    Glm4Model,
    Glm4PreTrainedModel,
)

__all__ = ["Glm4ForCausalLM", "Glm4ForSequenceClassification", "Glm4ForTokenClassification", "Glm4Model",
           "Glm4PreTrainedModel"]
