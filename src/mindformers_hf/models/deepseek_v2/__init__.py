from .modeling_deepseek_v2 import (
    DeepseekV2ForCausalLM,
    DeepseekV2ForSequenceClassification,
    DeepseekV2Model,
    DeepseekV2PreTrainedModel,
    DeepseekV3ForCausalLM,
    DeepseekV3ForSequenceClassification,
    DeepseekV3ForTokenClassification,
    DeepseekV3Model,
    DeepseekV3PreTrainedModel,
)

__all__ = ["DeepseekV2ForCausalLM", "DeepseekV2ForSequenceClassification", "DeepseekV2Model",
           "DeepseekV2PreTrainedModel", "DeepseekV3ForCausalLM", "DeepseekV3ForSequenceClassification",
           "DeepseekV3ForTokenClassification", "DeepseekV3Model", "DeepseekV3PreTrainedModel"]
