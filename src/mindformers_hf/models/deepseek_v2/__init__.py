from .modeling_deepseek_v2 import (
    DeepseekV2ForCausalLM,
    DeepseekV2Model,
    DeepseekV2PreTrainedModel,
    DeepseekV3ForCausalLM,
    DeepseekV3Model,
    DeepseekV3PreTrainedModel,
)

__all__ = ["DeepseekV2ForCausalLM", "DeepseekV2Model", "DeepseekV2PreTrainedModel", "DeepseekV3ForCausalLM",
           "DeepseekV3Model", "DeepseekV3PreTrainedModel"]
