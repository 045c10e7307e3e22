"""LLaMA in MindSpore with HF parameter names: serves LLaMA 2/3/3.1, CodeLlama, Yi, DeepSeek-Coder, SmolLM.

Read top to bottom as transformers' modeling_llama.py: norm, rotary, MLP, attention, decoder layer,
base model, causal-LM head. Fused kernels are reached only through `mindformers_hf.ops`.
"""
import importlib
from dataclasses import dataclass

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...cache_utils import DynamicCache
from ...layers import Embedding, Linear, call_layer, new_parameter, recomputes
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask, packed_sequence_ids
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from ...modeling_rope_utils import compute_inv_freq, rope_parameters
from ...modeling_utils import PreTrainedModel
from ...utils import warn_once
from .compiled_layer import layer_graph, layer_spec, layer_weights


@dataclass(frozen=True)
class DecoderVariant:
    """How a LLaMA-shaped family departs from LLaMA; each switch mirrors a line of that family's HF file."""
    qkv_bias: bool = None             # None: config.attention_bias, as LLaMA and Qwen3
    o_bias: bool = None               # None: config.attention_bias
    qk_norm: bool = False             # Qwen3: RMSNorm over head_dim on q and k, before rotary
    fused_qkv: bool = False           # Phi3: one `qkv_proj` [(H + 2*KV) * D, hidden], rows q then k then v
    fused_gate_up: bool = False       # Phi3, GLM: one `gate_up_proj` [2 * inter, hidden], rows gate then up
    interleaved_rotary: bool = False  # GLM: rotary pairs are adjacent dims (0, 1), (2, 3), ...
    sandwich_norm: bool = False       # GLM4: RMSNorm on the attention and MLP outputs, before each residual add
    attention: str = None             # "module:Class" replacing LlamaAttention (DeepSeek's latent attention)
    mlp: str = None                   # "module:function(config, layer_idx, dtype)" building a layer's MLP (MoE)


_MOE_MLP = "mindformers_hf.models.mixtral.modeling_mixtral:moe_mlp_for_layer"
_MLA = "mindformers_hf.models.deepseek_v2.modeling_deepseek_v2:DeepseekV2Attention"
_BAICHUAN_ATTENTION = "mindformers_hf.models.baichuan.modeling_baichuan:BaichuanAttention"
_QWEN_MLP = "mindformers_hf.models.qwen.modeling_qwen:qwen_mlp"

# config.model_type -> variant. Absent types (llama, mistral) are plain LLaMA; sliding windows,
# partial rotary and rope scaling come from the config itself.
DECODER_VARIANTS = {
    "qwen2": DecoderVariant(qkv_bias=True, o_bias=False),
    "qwen3": DecoderVariant(qk_norm=True),
    "phi3": DecoderVariant(fused_qkv=True, fused_gate_up=True),
    "glm": DecoderVariant(o_bias=False, fused_gate_up=True, interleaved_rotary=True),
    "glm4": DecoderVariant(o_bias=False, fused_gate_up=True, interleaved_rotary=True, sandwich_norm=True),
    # MoE families: LLaMA with sparse MLPs (models/mixtral), DeepSeek also with latent attention
    "mixtral": DecoderVariant(mlp=_MOE_MLP),
    "qwen2_moe": DecoderVariant(o_bias=False, mlp=_MOE_MLP),  # q/k/v bias from config.qkv_bias
    "qwen3_moe": DecoderVariant(qk_norm=True, mlp=_MOE_MLP),
    "deepseek_v2": DecoderVariant(attention=_MLA, mlp=_MOE_MLP),
    "deepseek_v3": DecoderVariant(attention=_MLA, mlp=_MOE_MLP),
    # formats the Hub runs with trust_remote_code, read natively: renaming tables in models/<family>/ map their
    # tensors onto these names (InternLM v1 needs no row: LLaMA with attention_bias)
    "internlm2": DecoderVariant(fused_qkv=True),                     # wqkv, regrouped at load
    "baichuan": DecoderVariant(fused_qkv=True, attention=_BAICHUAN_ATTENTION),  # W_pack; ALiBi on 13B
    "chatglm": DecoderVariant(fused_qkv=True, fused_gate_up=True, interleaved_rotary=True),  # GLM, fused qkv
    "qwen": DecoderVariant(fused_qkv=True, qkv_bias=True, mlp=_QWEN_MLP),  # c_attn; w1/w2 half-width MLP
}


def decoder_variant(config):
    return DECODER_VARIANTS.get(getattr(config, "model_type", None), DecoderVariant())


def _resolve(target):
    """A variant's "module:name" -> the object, imported on first use (the LLaMA file imports no family)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class LlamaRMSNorm(nn.Cell):
    def __init__(self, hidden_size, eps=1e-6, dtype=ms.float32):
        super().__init__()
        self.weight = new_parameter((hidden_size,), dtype, "ones")
        self.variance_epsilon = eps

    def construct(self, hidden_states):
        return fused.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class LlamaRotaryEmbedding(nn.Cell):
    """cos/sin tables [B, S, head_dim] for the given positions; "dynamic" rope rescales past max positions."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.rope_type = rope_parameters(config)["rope_type"]
        inv_freq, self.attention_scaling = compute_inv_freq(config)
        self.inv_freq = ms.Tensor(inv_freq)

    def construct(self, x, position_ids):
        inv_freq = self.inv_freq
        if self.rope_type == "dynamic":
            seq_len = int(position_ids.max().asnumpy()) + 1
            if seq_len > self.config.max_position_embeddings:
                inv_freq = ms.Tensor(compute_inv_freq(self.config, seq_len)[0])
        elif self.rope_type == "longrope":  # Phi3: long factors once positions outgrow the pretraining length
            seq_len = int(position_ids.max().asnumpy()) + 1
            inv_freq = ms.Tensor(compute_inv_freq(self.config, seq_len)[0])
        freqs = position_ids.astype(ms.float32).expand_dims(-1) * inv_freq          # [B, S, D/2]
        emb = ops.cat((freqs, freqs), -1)                                            # [B, S, D]
        cos = ops.cos(emb) * self.attention_scaling
        sin = ops.sin(emb) * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


class LlamaMLP(nn.Cell):
    def __init__(self, config, dtype=ms.float32, intermediate_size=None):
        super().__init__()
        hidden, bias = config.hidden_size, getattr(config, "mlp_bias", False)
        inter = intermediate_size or config.intermediate_size  # MoE shared experts are narrower or wider
        std = config.initializer_range
        self.intermediate_size = inter
        self.fused_gate_up = decoder_variant(config).fused_gate_up
        if self.fused_gate_up:
            self.gate_up_proj = Linear(hidden, 2 * inter, bias, dtype, std=std)
        else:
            self.gate_proj = Linear(hidden, inter, bias, dtype, std=std)
            self.up_proj = Linear(hidden, inter, bias, dtype, std=std)
        self.down_proj = Linear(inter, hidden, bias, dtype, std=std)
        if config.hidden_act not in ("silu", "swish"):
            raise NotImplementedError(f"LLaMA MLP activation {config.hidden_act!r} is not supported (only silu)")

    def construct(self, x):
        if self.fused_gate_up:
            gate_up = self.gate_up_proj(x)                                           # [B, S, 2 * I]
            gate, up = gate_up[..., :self.intermediate_size], gate_up[..., self.intermediate_size:]
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(fused.silu_mul(gate, up))


class LlamaAttention(nn.Cell):
    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.scaling = self.head_dim ** -0.5
        # HF's field, set by from_pretrained(attn_implementation=...); the ops registry maps it to a kernel
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        variant = decoder_variant(config)
        bias, std = getattr(config, "attention_bias", False), config.initializer_range
        qkv_bias = getattr(config, "qkv_bias", bias) if variant.qkv_bias is None else variant.qkv_bias
        o_bias = bias if variant.o_bias is None else variant.o_bias
        q_size, kv_size = self.num_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        self.fused_qkv = variant.fused_qkv
        if self.fused_qkv:
            self.qkv_proj = Linear(config.hidden_size, q_size + 2 * kv_size, qkv_bias, dtype, std=std)
        else:
            self.q_proj = Linear(config.hidden_size, q_size, qkv_bias, dtype, std=std)
            self.k_proj = Linear(config.hidden_size, kv_size, qkv_bias, dtype, std=std)
            self.v_proj = Linear(config.hidden_size, kv_size, qkv_bias, dtype, std=std)
        self.o_proj = Linear(q_size, config.hidden_size, o_bias, dtype, std=std)
        self.qk_norm = variant.qk_norm
        if self.qk_norm:
            self.q_norm = LlamaRMSNorm(self.head_dim, config.rms_norm_eps, dtype)
            self.k_norm = LlamaRMSNorm(self.head_dim, config.rms_norm_eps, dtype)
        self.interleaved_rotary = variant.interleaved_rotary

    def project_qkv(self, hidden_states):
        """[B, S, hidden] -> q [B, H, S, D], k and v [B, KV, S, D] (q and k normed per head when qk_norm)."""
        bsz, q_len, _ = hidden_states.shape
        if self.fused_qkv:
            qkv = self.qkv_proj(hidden_states)                                      # [B, S, (H + 2*KV) * D]
            q_size, kv_size = self.num_heads * self.head_dim, self.num_key_value_heads * self.head_dim
            q, k, v = qkv[..., :q_size], qkv[..., q_size:q_size + kv_size], qkv[..., q_size + kv_size:]
        else:
            q, k, v = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
        q = q.reshape(bsz, q_len, self.num_heads, self.head_dim)
        k = k.reshape(bsz, q_len, self.num_key_value_heads, self.head_dim)
        v = v.reshape(bsz, q_len, self.num_key_value_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2)

    def rotate(self, q, k, cos, sin):
        """Rotary on the first cos.shape[-1] channels of each head (all unless partial_rotary_factor < 1)."""
        return fused.apply_rotary_pos_emb(q, k, cos, sin, interleaved=self.interleaved_rotary)

    def construct(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None):
        bsz, q_len, _ = hidden_states.shape
        q, k, v = self.project_qkv(hidden_states)                                    # [B, H or KV, S, D]
        q, k = self.rotate(q, k, cos, sin)
        if getattr(past_key_values, "is_paged", False):   # serving's block pool: attention reads it in place
            out = past_key_values.attend(q, k, v, self.layer_idx, attention_mask, self.scaling,
                                         attn_implementation=self.attn_implementation)
        else:
            if past_key_values is not None:
                k, v = past_key_values.update(k, v, self.layer_idx)
            out = fused.causal_attention(q, k, v, attention_mask, self.scaling,
                                         attn_implementation=self.attn_implementation)  # [B, H, S, D]
        out = out.swapaxes(1, 2).reshape(bsz, q_len, self.num_heads * self.head_dim)
        return self.o_proj(out)


class LlamaDecoderLayer(nn.Cell):
    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        variant = decoder_variant(config)
        attention = _resolve(variant.attention) if variant.attention else LlamaAttention
        self.self_attn = attention(config, layer_idx, dtype)
        self.mlp = _resolve(variant.mlp)(config, layer_idx, dtype) if variant.mlp else LlamaMLP(config, dtype)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.sandwich_norm = decoder_variant(config).sandwich_norm
        if self.sandwich_norm:
            self.post_self_attn_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
            self.post_mlp_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        # the mask this layer reads: Qwen2/3 name full or sliding-window attention per layer in `layer_types`
        layer_types = getattr(config, "layer_types", None)
        self.attention_type = layer_types[layer_idx] if layer_types else "full_attention"

    def construct(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None):
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), cos, sin, attention_mask, past_key_values)
        if self.sandwich_norm:
            hidden_states = self.post_self_attn_layernorm(hidden_states)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        if self.sandwich_norm:
            hidden_states = self.post_mlp_layernorm(hidden_states)
        return residual + hidden_states


class LlamaPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    _no_split_modules = ["LlamaDecoderLayer"]


class LlamaModel(LlamaPreTrainedModel):
    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.padding_idx = getattr(config, "pad_token_id", None)
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype, std=config.initializer_range)
        self.layers = nn.CellList([LlamaDecoderLayer(config, i, dtype) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        # "prefill" (generation/runner.py, which reads only the last position's logits: the last layer then
        # returns only that position) or "train" (the Trainer) around those calls: see compiled_layer.py
        self.compile_layers = False

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, use_cache=None, output_hidden_states=None, output_attentions=None,
                  return_dict=None, cache_position=None, cache=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if output_attentions:
            raise NotImplementedError("output_attentions=True is not supported (the attention kernels do not return "
                                      "probabilities)")
        for key in kwargs:
            warn_once(f"{type(self).__name__}: keyword {key!r} is accepted for compatibility and ignored")
        past_key_values = past_key_values if past_key_values is not None else cache
        if output_hidden_states is None:
            output_hidden_states = getattr(self.config, "output_hidden_states", False)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        packed = packed_sequence_ids(position_ids, attention_mask, use_cache, past_key_values, self.config)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        bsz, q_len = inputs_embeds.shape[0], inputs_embeds.shape[1]
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = (ops.arange(q_len, dtype=ms.int32) + past_len).reshape(1, q_len)
        masks = self.causal_masks(attention_mask, bsz, q_len, past_len, packed)

        hidden_states = inputs_embeds
        cos, sin = self.rotary_emb(hidden_states, position_ids)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        # compile_layers (generate's prefill, Trainer steps): plain layers run as one shared compiled graph
        # (compiled_layer.py); in a prefill each writes its keys and values into the (empty) cache itself
        compiled = self.compile_layers and past_len == 0 and q_len > 1
        for index, layer in enumerate(self.layers):
            mask = masks[layer.attention_type]
            # a recomputing layer (activation checkpointing) runs eagerly: ms.recompute takes a Cell
            spec = layer_spec(layer) if compiled and mask is not None and not recomputes(layer) else None
            if spec is None:
                hidden_states = call_layer(layer, hidden_states, cos, sin, mask, past_key_values=past_key_values)
            else:
                last_only = self.compile_layers == "prefill" and index == len(self.layers) - 1 \
                    and not output_hidden_states
                graph = layer_graph(spec, past_key_values is not None, last_only)
                weights = layer_weights(layer, spec, differentiable=self.compile_layers == "train")
                hidden_states = graph(hidden_states, cos, sin, mask, *weights)
                if past_key_values is not None:
                    hidden_states, keys, values = hidden_states
                    past_key_values.update(keys, values, layer.self_attn.layer_idx)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:  # as in HF, the last entry is the normed final state
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        out = BaseModelOutputWithPast(last_hidden_state=hidden_states,
                                      past_key_values=past_key_values if use_cache else None,
                                      hidden_states=all_hidden_states)
        return out.to_tuple() if return_dict is False else out

    def compiles_layers(self):
        """True when compile_layers would compile these layers (plain LLaMA ones: compiled_layer.py)."""
        return any(layer_spec(layer) is not None for layer in self.layers)

    def causal_masks(self, attention_mask, bsz, q_len, past_len, packed=None):
        """{layer type: additive mask}. Without `layer_types` (LLaMA, Mistral, Phi3) one mask serves every
        layer, windowed when the config has a `sliding_window`; Qwen2/3 configs null that window unless
        use_sliding_window and list which layers use it."""
        if isinstance(attention_mask, dict):  # prebuilt per layer type (generate's static cache; transformers 5 too)
            return attention_mask
        window = getattr(self.config, "sliding_window", None)
        layer_types = getattr(self.config, "layer_types", None)
        if not layer_types:
            window = window if getattr(self.config, "use_sliding_window", True) else None
            mask = create_causal_mask(attention_mask, bsz, q_len, past_len, window, packed)
            return {"full_attention": mask, "sliding_attention": mask}
        masks = {"full_attention": create_causal_mask(attention_mask, bsz, q_len, past_len, packed=packed)}
        if "sliding_attention" in layer_types:
            masks["sliding_attention"] = create_causal_mask(attention_mask, bsz, q_len, past_len, window, packed)
        return masks


class LlamaForCausalLM(LlamaPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.model = LlamaModel(config, dtype)
        self.vocab_size = config.vocab_size
        # Tied checkpoints store no lm_head.weight: the embedding matrix serves as the head.
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, False, dtype, std=config.initializer_range)
        self._logits_matmul = ops.MatMul(transpose_b=True)

    def get_output_embeddings(self):
        return self.model.embed_tokens if self.tied else self.lm_head

    def lm_logits(self, hidden_states):
        head = self.get_output_embeddings()
        if hasattr(head, "parallel_logits"):  # tensor parallel (parallel/plan.py): each rank holds a vocab slice
            return head.parallel_logits(hidden_states)
        weight = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        shape = hidden_states.shape
        logits = self._logits_matmul(hidden_states.reshape(-1, shape[-1]), weight)
        return logits.reshape(shape[:-1] + (weight.shape[0],))

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, logits_to_keep=0, num_items_in_batch=None, **kwargs):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                             **kwargs)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_logits(hidden_states)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, num_items_in_batch)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                     hidden_states=outputs.hidden_states)
        return out.to_tuple() if return_dict is False else out


class LlamaForSequenceClassification(GenericForSequenceClassification, LlamaPreTrainedModel):
    _base_model_class = LlamaModel


class LlamaForTokenClassification(GenericForTokenClassification, LlamaPreTrainedModel):
    _base_model_class = LlamaModel
