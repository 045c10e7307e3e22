"""GLM-4-9B-chat-hf (`GlmForCausalLM`): LLaMA with interleaved partial rotary, q/k/v bias and fused
`gate_up_proj`.

partial_rotary_factor (0.5 by default) comes from the config; the rest from the "glm" row of
DECODER_VARIANTS.
The classes exist for their names (`architectures` in config.json, `from mindformers_hf import ...`);
the computation is models/llama/modeling_llama.py.
"""
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel


class GlmPreTrainedModel(LlamaPreTrainedModel):
    pass


class GlmModel(LlamaModel):
    pass


class GlmForCausalLM(LlamaForCausalLM):
    pass


class GlmForSequenceClassification(GenericForSequenceClassification, GlmPreTrainedModel):
    _base_model_class = GlmModel


class GlmForTokenClassification(GenericForTokenClassification, GlmPreTrainedModel):
    _base_model_class = GlmModel
