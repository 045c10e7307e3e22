"""Phi-3 / Phi-3.5 / Phi-4-mini: LLaMA with fused `qkv_proj` and `gate_up_proj` weights.

The fused layouts stay fused under HF's own names, so loading and save_pretrained need no
renaming table. LongRoPE and partial_rotary_factor come from the config.
The classes exist for their names (`architectures` in config.json, `from mindformers_hf import ...`);
the computation is models/llama/modeling_llama.py.
"""
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel


class Phi3PreTrainedModel(LlamaPreTrainedModel):
    pass


class Phi3Model(LlamaModel):
    pass


class Phi3ForCausalLM(LlamaForCausalLM):
    pass


class Phi3ForSequenceClassification(GenericForSequenceClassification, Phi3PreTrainedModel):
    _base_model_class = Phi3Model


class Phi3ForTokenClassification(GenericForTokenClassification, Phi3PreTrainedModel):
    _base_model_class = Phi3Model
