"""ChatGLM2-6B, ChatGLM3-6B and GLM-4-9B-chat in their original format (`model_type` "chatglm": `ChatGLMModel`,
`ChatGLMForConditionalGeneration`) on the LLaMA classes, loading the repos' checkpoints as they are: no
code from the repo runs.

ChatGLM is transformers' GLM (GLM-4-9B-chat-hf is its conversion, transformers'
convert_glm_weights_to_hf.py): RMSNorm, multi-query groups, rotary on the first half of each head with
adjacent pairs (0, 1), (2, 3), ..., q/k/v bias, and a fused SwiGLU `dense_h_to_4h` (gate rows, then up
rows). We keep q/k/v fused as `qkv_proj` (the variant declared in models/chatglm/__init__.py); the table maps the
other names, and save_pretrained writes ChatGLM's again.
"""
from ...weights import CheckpointFormatMixin, WeightRule, WeightTable
from ..family import build_classes
from . import FAMILY
from .chat_chatglm import ChatGLMChatMixin

_LAYER, _OURS = "transformer.encoder.layers.{i}.", "model.layers.{i}."
CHATGLM_WEIGHTS = WeightTable(
    WeightRule("transformer.embedding.word_embeddings.weight", "model.embed_tokens.weight"),
    WeightRule(_LAYER + "input_layernorm.weight", _OURS + "input_layernorm.weight"),
    WeightRule(_LAYER + "self_attention.query_key_value.{kind}", _OURS + "self_attn.qkv_proj.{kind}"),
    WeightRule(_LAYER + "self_attention.dense.{kind}", _OURS + "self_attn.o_proj.{kind}"),
    WeightRule(_LAYER + "post_attention_layernorm.weight", _OURS + "post_attention_layernorm.weight"),
    WeightRule(_LAYER + "mlp.dense_h_to_4h.{kind}", _OURS + "mlp.gate_up_proj.{kind}"),
    WeightRule(_LAYER + "mlp.dense_4h_to_h.{kind}", _OURS + "mlp.down_proj.{kind}"),
    WeightRule("transformer.encoder.final_layernorm.weight", "model.norm.weight"),
    WeightRule("transformer.output_layer.weight", "lm_head.weight"),
    skip=(r"^transformer\.rotary_pos_emb\.inv_freq$",),  # a buffer some checkpoints saved
)


# the three classes, LLaMA's with the renaming table. The causal LM is ChatGLM's name for it; `AutoModelForCausalLM`
# and `AutoModel` on a ChatGLM repo build it, as the repos' auto_map does. `chat` / `stream_chat` are ChatGLM3's
# (chat_chatglm.py).
ChatGLMPreTrainedModel, ChatGLMModel, ChatGLMForConditionalGeneration = build_classes(
    FAMILY, __name__, CheckpointFormatMixin, chat=ChatGLMChatMixin, weight_table=CHATGLM_WEIGHTS)
