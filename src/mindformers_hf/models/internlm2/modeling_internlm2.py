"""InternLM2 / InternLM2.5 (`InternLM2ForCausalLM`) on the LLaMA classes, loading the repos' checkpoints as
they are: no code from the repo runs.

InternLM2 is LLaMA with other tensor names and q/k/v fused as `wqkv` in a grouped layout: for each of the
KV heads, its q_per_kv query heads, then its key head, then its value head ([KV, q_per_kv + 2, D] rows).
We hold them as one `qkv_proj` (all q rows, then k, then v: the variant declared in __init__.py), so
the table below reorders wqkv at load and back at save_pretrained, which writes InternLM2's names.
"""
import numpy as np

from ...weights import CheckpointFormatMixin, WeightRule, WeightTable
from ..family import build_classes
from . import FAMILY
from .chat_internlm2 import InternLM2ChatMixin


def _groups(config):
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    return kv, heads // kv, config.hidden_size // heads  # KV heads, q per kv, head_dim


def wqkv_to_qkv(array, config):
    """wqkv rows [KV, (G + 2), D] -> qkv_proj rows [q: KV * G * D, k: KV * D, v: KV * D] (weight or bias)."""
    kv, g, d = _groups(config)
    w = array.reshape((kv, g + 2, d) + array.shape[1:])
    q = w[:, :g].reshape((kv * g * d,) + array.shape[1:])   # query head h * G + j is group h's j-th
    return np.concatenate([q, w[:, g].reshape((kv * d,) + array.shape[1:]),
                           w[:, g + 1].reshape((kv * d,) + array.shape[1:])])


def qkv_to_wqkv(array, config):
    kv, g, d = _groups(config)
    rest = array.shape[1:]
    q = array[:kv * g * d].reshape((kv, g, d) + rest)
    k = array[kv * g * d:kv * (g + 1) * d].reshape((kv, 1, d) + rest)
    v = array[kv * (g + 1) * d:].reshape((kv, 1, d) + rest)
    return np.concatenate([q, k, v], axis=1).reshape(array.shape)


_LAYER = "model.layers.{i}."
INTERNLM2_WEIGHTS = WeightTable(
    WeightRule("model.tok_embeddings.weight", "model.embed_tokens.weight"),
    WeightRule(_LAYER + "attention.wqkv.{kind}", _LAYER + "self_attn.qkv_proj.{kind}", wqkv_to_qkv, qkv_to_wqkv),
    WeightRule(_LAYER + "attention.wo.{kind}", _LAYER + "self_attn.o_proj.{kind}"),
    WeightRule(_LAYER + "attention_norm.weight", _LAYER + "input_layernorm.weight"),
    WeightRule(_LAYER + "ffn_norm.weight", _LAYER + "post_attention_layernorm.weight"),
    WeightRule(_LAYER + "feed_forward.w1.weight", _LAYER + "mlp.gate_proj.weight"),
    WeightRule(_LAYER + "feed_forward.w3.weight", _LAYER + "mlp.up_proj.weight"),
    WeightRule(_LAYER + "feed_forward.w2.weight", _LAYER + "mlp.down_proj.weight"),
    WeightRule("output.weight", "lm_head.weight"),
)


# the three classes, LLaMA's with the renaming table (and the chat methods on the causal LM)
InternLM2PreTrainedModel, InternLM2Model, InternLM2ForCausalLM = build_classes(
    FAMILY, __name__, CheckpointFormatMixin, chat=InternLM2ChatMixin, weight_table=INTERNLM2_WEIGHTS)
