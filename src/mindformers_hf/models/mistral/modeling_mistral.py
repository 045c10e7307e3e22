"""Mistral: LLaMA whose attention sees only the last `sliding_window` keys.

The window is read from the config by LlamaModel.causal_masks; nothing else differs.
The classes exist for their names (`architectures` in config.json, `from mindformers_hf import ...`);
the computation is models/llama/modeling_llama.py.
"""
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel


class MistralPreTrainedModel(LlamaPreTrainedModel):
    pass


class MistralModel(LlamaModel):
    pass


class MistralForCausalLM(LlamaForCausalLM):
    pass


class MistralForSequenceClassification(GenericForSequenceClassification, MistralPreTrainedModel):
    _base_model_class = MistralModel


class MistralForTokenClassification(GenericForTokenClassification, MistralPreTrainedModel):
    _base_model_class = MistralModel
