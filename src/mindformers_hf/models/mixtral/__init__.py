from .modeling_mixtral import (
    MixtralForCausalLM,
    MixtralForSequenceClassification,
    MixtralForTokenClassification,
    MixtralModel,
    MixtralPreTrainedModel,
)

__all__ = ["MixtralForCausalLM", "MixtralForSequenceClassification", "MixtralForTokenClassification",
           "MixtralModel", "MixtralPreTrainedModel"]
