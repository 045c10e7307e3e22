"""Qwen3: LLaMA with an RMSNorm over head_dim on each query and key head, before rotary.

q_norm / k_norm come from the "qwen3" row of DECODER_VARIANTS; sliding windows as in Qwen2.
The classes exist for their names (`architectures` in config.json, `from mindformers_hf import ...`);
the computation is models/llama/modeling_llama.py.
"""
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel


class Qwen3PreTrainedModel(LlamaPreTrainedModel):
    pass


class Qwen3Model(LlamaModel):
    pass


class Qwen3ForCausalLM(LlamaForCausalLM):
    pass


class Qwen3ForSequenceClassification(GenericForSequenceClassification, Qwen3PreTrainedModel):
    _base_model_class = Qwen3Model


class Qwen3ForTokenClassification(GenericForTokenClassification, Qwen3PreTrainedModel):
    _base_model_class = Qwen3Model
