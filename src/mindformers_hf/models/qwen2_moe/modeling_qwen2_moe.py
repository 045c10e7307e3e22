"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B) and Qwen3-MoE: LLaMA attention with a sparse MLP.

Qwen2-MoE: q/k/v biases (config.qkv_bias), a softmax router with `norm_topk_prob`, a shared expert scaled by
its own sigmoid gate, and dense MLPs in `mlp_only_layers` and off the `decoder_sparse_step` grid. Qwen3-MoE:
RMSNorm on q and k per head, no shared expert. The differences are the "qwen2_moe" / "qwen3_moe" rows of
LLaMA's DECODER_VARIANTS and of MOE_VARIANTS (models/mixtral/modeling_mixtral.py); the classes exist for
their names (`architectures` in config.json, `from mindformers_hf import ...`).
"""
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ..mixtral.modeling_mixtral import MixtralForCausalLM, MixtralModel, MixtralPreTrainedModel


class Qwen2MoePreTrainedModel(MixtralPreTrainedModel):
    pass


class Qwen2MoeModel(MixtralModel):
    pass


class Qwen2MoeForCausalLM(MixtralForCausalLM):
    pass


class Qwen3MoePreTrainedModel(MixtralPreTrainedModel):
    pass


class Qwen3MoeModel(MixtralModel):
    pass


class Qwen3MoeForCausalLM(MixtralForCausalLM):
    pass


class Qwen2MoeForSequenceClassification(GenericForSequenceClassification, Qwen2MoePreTrainedModel):
    _base_model_class = Qwen2MoeModel


class Qwen2MoeForTokenClassification(GenericForTokenClassification, Qwen2MoePreTrainedModel):
    _base_model_class = Qwen2MoeModel


class Qwen3MoeForSequenceClassification(GenericForSequenceClassification, Qwen3MoePreTrainedModel):
    _base_model_class = Qwen3MoeModel


class Qwen3MoeForTokenClassification(GenericForTokenClassification, Qwen3MoePreTrainedModel):
    _base_model_class = Qwen3MoeModel
