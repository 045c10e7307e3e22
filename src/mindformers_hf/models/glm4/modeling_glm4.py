"""GLM-4-0414 (`Glm4ForCausalLM`): GLM plus an RMSNorm on each sublayer's output before the residual add.

post_self_attn_layernorm / post_mlp_layernorm come from the "glm4" row of DECODER_VARIANTS.
The classes exist for their names (`architectures` in config.json, `from mindformers_hf import ...`);
the computation is models/llama/modeling_llama.py.
"""
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel


class Glm4PreTrainedModel(LlamaPreTrainedModel):
    pass


class Glm4Model(LlamaModel):
    pass


class Glm4ForCausalLM(LlamaForCausalLM):
    pass


class Glm4ForSequenceClassification(GenericForSequenceClassification, Glm4PreTrainedModel):
    _base_model_class = Glm4Model


class Glm4ForTokenClassification(GenericForTokenClassification, Glm4PreTrainedModel):
    _base_model_class = Glm4Model
