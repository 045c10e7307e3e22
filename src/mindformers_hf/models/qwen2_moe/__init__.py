from .modeling_qwen2_moe import (
    Qwen2MoeForCausalLM,
    Qwen2MoeForSequenceClassification,
    Qwen2MoeForTokenClassification,
    Qwen2MoeModel,
    Qwen2MoePreTrainedModel,
    Qwen3MoeForCausalLM,
    Qwen3MoeForSequenceClassification,
    Qwen3MoeForTokenClassification,
    Qwen3MoeModel,
    Qwen3MoePreTrainedModel,
)

__all__ = ["Qwen2MoeForCausalLM", "Qwen2MoeForSequenceClassification", "Qwen2MoeForTokenClassification",
           "Qwen2MoeModel", "Qwen2MoePreTrainedModel", "Qwen3MoeForCausalLM",
           "Qwen3MoeForSequenceClassification", "Qwen3MoeForTokenClassification", "Qwen3MoeModel",
           "Qwen3MoePreTrainedModel"]
