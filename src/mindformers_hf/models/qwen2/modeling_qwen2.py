"""Qwen2 (serves Qwen1.5, Qwen2, Qwen2.5): LLaMA with biases on q/k/v but not o_proj.

The biases are the "qwen2" row of DECODER_VARIANTS. Sliding windows follow the config as transformers
does: off unless `use_sliding_window`, then on for the layers `layer_types` marks (from `max_window_layers`).
The classes exist for their names (`architectures` in config.json, `from mindformers_hf import ...`);
the computation is models/llama/modeling_llama.py.
"""
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel


class Qwen2PreTrainedModel(LlamaPreTrainedModel):
    pass


class Qwen2Model(LlamaModel):
    pass


class Qwen2ForCausalLM(LlamaForCausalLM):
    pass


class Qwen2ForSequenceClassification(GenericForSequenceClassification, Qwen2PreTrainedModel):
    _base_model_class = Qwen2Model


class Qwen2ForTokenClassification(GenericForTokenClassification, Qwen2PreTrainedModel):
    _base_model_class = Qwen2Model
