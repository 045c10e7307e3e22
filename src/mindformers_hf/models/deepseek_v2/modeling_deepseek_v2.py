"""DeepSeek-V2 (and DeepSeek-V3): multi-head latent attention (MLA) on LLaMA's decoder, with sparse MLPs.

MLA compresses keys and values into one `kv_lora_rank` latent per token plus one shared rotary key of
`qk_rope_head_dim` channels; `kv_b_proj` expands the latent into per-head no-rope keys and values. Queries
come straight from `q_proj`, or through a low-rank `q_a_proj` -> RMSNorm -> `q_b_proj` when `q_lora_rank`
is set. As in transformers, the cache holds the compressed latent and the rotated shared key, not the
expanded keys and values.

Everything else is configuration: the "deepseek_v2" / "deepseek_v3" declarations (__init__.py)
point the decoder layer at `DeepseekV2Attention` and at the MoE MLP of models/mixtral (dense MLPs in the
first `first_k_dense_replace` layers, shared experts, group-limited routing, `routed_scaling_factor`), and
LLaMA's rotary module makes the cos/sin tables (yarn's mscale included) over `head_dim = qk_rope_head_dim`.
"""
import math
import re

import mindspore as ms
from mindspore import nn, ops

from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ... import ops as fused
from ...layers import Linear
from ...modeling_rope_utils import rope_parameters
from ..llama.modeling_llama import LlamaRMSNorm
from ..mixtral.modeling_mixtral import MixtralForCausalLM, MixtralModel, MixtralPreTrainedModel


def yarn_get_mscale(scale=1.0, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def softmax_scale(config, qk_head_dim):
    """1/sqrt(qk_head_dim), times yarn's mscale(factor, mscale_all_dim)^2 when the rope is scaled (HF's rule)."""
    scale = qk_head_dim ** -0.5
    params = rope_parameters(config)
    if params["rope_type"] != "default" and params.get("mscale_all_dim"):
        mscale = yarn_get_mscale(params["factor"], params["mscale_all_dim"])
        scale = scale * mscale * mscale
    return scale


class DeepseekV2Attention(nn.Cell):
    # tensor-parallel layout (parallel/plan.py), HF's: q (or q_b), kv_b rows and o_proj columns split by whole
    # heads; q_a, kv_a and their norms replicated, the shared rotary key's gradient summed over the ranks
    _tp_plan = {"q_proj": ("colwise", "num_attention_heads"), "q_b_proj": ("colwise", "num_attention_heads"),
                "kv_a_proj_with_mqa": ("mla_kv_a_proj", "kv_lora_rank", "qk_rope_head_dim"),
                "kv_b_proj": ("colwise", "num_attention_heads:kv_b"), "o_proj": ("rowwise", "num_attention_heads:o")}

    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        self.layer_idx = layer_idx
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        if kv_heads != heads:
            # HF's eager path repeats the already per-head keys again and fails; no checkpoint does this
            raise NotImplementedError(f"DeepSeek MLA with num_key_value_heads={kv_heads} != num_attention_heads="
                                      f"{heads} is not supported (keys are per head after kv_b_proj)")
        self.q_lora_rank = config.q_lora_rank
        self.kv_lora_rank = config.kv_lora_rank
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.qk_rope_head_dim = config.qk_rope_head_dim
        self.v_head_dim = config.v_head_dim
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.tp_units = {"num_attention_heads": (heads, self.qk_head_dim, False),
                         "num_attention_heads:kv_b": (heads, self.qk_nope_head_dim + self.v_head_dim, False),
                         "num_attention_heads:o": (heads, self.v_head_dim, False),
                         "kv_lora_rank": (self.kv_lora_rank, 1, False),
                         "qk_rope_head_dim": (self.qk_rope_head_dim, 1, False)}
        hidden, bias, std = config.hidden_size, bool(getattr(config, "attention_bias", False)), config.initializer_range
        # HF builds these two norms with RMSNorm's default eps (1e-6), not config.rms_norm_eps
        if self.q_lora_rank is None:
            self.q_proj = Linear(hidden, heads * self.qk_head_dim, False, dtype, std=std)
        else:
            self.q_a_proj = Linear(hidden, self.q_lora_rank, bias, dtype, std=std)
            self.q_a_layernorm = LlamaRMSNorm(self.q_lora_rank, 1e-6, dtype)
            self.q_b_proj = Linear(self.q_lora_rank, heads * self.qk_head_dim, False, dtype, std=std)
        self.kv_a_proj_with_mqa = Linear(hidden, self.kv_lora_rank + self.qk_rope_head_dim, bias, dtype, std=std)
        self.kv_a_layernorm = LlamaRMSNorm(self.kv_lora_rank, 1e-6, dtype)
        self.kv_b_proj = Linear(self.kv_lora_rank, heads * (self.qk_nope_head_dim + self.v_head_dim), False,
                                dtype, std=std)
        self.o_proj = Linear(heads * self.v_head_dim, hidden, bias, dtype, std=std)
        self.scaling = softmax_scale(config, self.qk_head_dim)
        # DeepSeek-V2 rotates adjacent channel pairs (HF multiplies them as complex numbers); V3 does when
        # `rope_interleave`, else HF's rotate_half halves
        self.interleaved = bool(getattr(config, "rope_interleave", True)) if config.model_type != "deepseek_v2" \
            else True

    @property
    def num_heads(self):
        """Heads, read from o_proj's input width (a tensor-parallel rank's share after the split)."""
        return self.o_proj.weight.shape[1] // self.v_head_dim

    def construct(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None):
        bsz, q_len, _ = hidden_states.shape
        if self.q_lora_rank is None:
            q = self.q_proj(hidden_states)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))
        q = q.reshape(bsz, q_len, self.num_heads, self.qk_head_dim).swapaxes(1, 2)         # [B, H, S, nope + rope]
        q_nope, q_rot = q[..., :self.qk_nope_head_dim], q[..., self.qk_nope_head_dim:]

        compressed = self.kv_a_proj_with_mqa(hidden_states)                                # [B, S, r + rope]
        latent = self.kv_a_layernorm(compressed[..., :self.kv_lora_rank]).reshape(bsz, 1, q_len, self.kv_lora_rank)
        k_rot = compressed[..., self.kv_lora_rank:].reshape(bsz, 1, q_len, self.qk_rope_head_dim)
        q_rot, k_rot = fused.apply_rotary_pos_emb(q_rot, k_rot, cos, sin, self.interleaved)
        if past_key_values is not None:  # the cache holds the latent [B, 1, T, r] and the shared rotary key
            latent, k_rot = past_key_values.update(latent, k_rot, self.layer_idx)
        kv_len = latent.shape[2]

        kv = self.kv_b_proj(latent).reshape(bsz, kv_len, self.num_heads, self.qk_nope_head_dim + self.v_head_dim)
        kv = kv.swapaxes(1, 2)                                                              # [B, H, T, nope + v]
        k_nope, v = kv[..., :self.qk_nope_head_dim], kv[..., self.qk_nope_head_dim:]
        k_rot = ops.broadcast_to(k_rot, (bsz, self.num_heads, kv_len, self.qk_rope_head_dim))
        q = ops.cat((q_nope, q_rot), -1)
        k = ops.cat((k_nope, k_rot), -1)                                                    # [B, H, T, qk]
        # the attention op takes one head size for q, k and v: zero channels change neither q.k nor p.v
        width = max(self.qk_head_dim, self.v_head_dim)
        if self.qk_head_dim < width:
            q, k = _pad_last(q, width), _pad_last(k, width)
        if self.v_head_dim < width:
            v = _pad_last(v, width)
        out = fused.causal_attention(q, k, v, attention_mask, self.scaling)                 # [B, H, S, width]
        out = out[..., :self.v_head_dim].swapaxes(1, 2).reshape(bsz, q_len, self.num_heads * self.v_head_dim)
        return self.o_proj(out)


def _pad_last(x, width):
    zeros = ops.zeros(x.shape[:-1] + (width - x.shape[-1],), x.dtype)
    return ops.cat((x, zeros), -1)


class DeepseekV2PreTrainedModel(MixtralPreTrainedModel):
    pass


class DeepseekV2Model(MixtralModel):
    pass


class DeepseekV2ForCausalLM(MixtralForCausalLM):
    pass


class _SkipMultiTokenPrediction:
    """DeepSeek-V3 checkpoints append the multi-token-prediction module as layers past num_hidden_layers;
    generation does not use it, and transformers skips it on load too."""

    def _skip_key(self, name):
        match = re.search(r"layers\.(\d+)\.", name)
        if match and int(match.group(1)) >= self.config.num_hidden_layers:
            return True
        return super()._skip_key(name)


class DeepseekV3PreTrainedModel(_SkipMultiTokenPrediction, MixtralPreTrainedModel):
    pass


class DeepseekV3Model(_SkipMultiTokenPrediction, MixtralModel):
    pass


class DeepseekV3ForCausalLM(_SkipMultiTokenPrediction, MixtralForCausalLM):
    pass


class DeepseekV2ForSequenceClassification(GenericForSequenceClassification, DeepseekV2PreTrainedModel):
    _base_model_class = DeepseekV2Model


class DeepseekV3ForSequenceClassification(GenericForSequenceClassification, DeepseekV3PreTrainedModel):
    _base_model_class = DeepseekV3Model


class DeepseekV3ForTokenClassification(GenericForTokenClassification, DeepseekV3PreTrainedModel):
    _base_model_class = DeepseekV3Model
