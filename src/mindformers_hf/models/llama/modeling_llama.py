"""LLaMA in MindSpore with HF parameter names: serves LLaMA 2/3/3.1, CodeLlama, Yi, DeepSeek-Coder, SmolLM.

Read top to bottom as transformers' modeling_llama.py: norm, rotary, MLP, attention, decoder layer,
base model, causal-LM head. Fused kernels are reached only through `mindformers_hf.ops`.
"""
import dataclasses

import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...activations import get_activation
from ...cache_utils import DynamicCache, default_use_cache
from ...compiled_layers import compile_mode
from ...layers import Embedding, LayerNorm, Linear, call_layer, new_parameter, recomputes
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask, packed_sequence_ids
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from ...modeling_rope_utils import compute_inv_freq, rope_parameters, rope_per_layer_type
from ...modeling_utils import PreTrainedModel
from ...utils import warn_once
from ..families import decoder_variant
from ..family import import_object
from .decoder_layer import (AttentionSpec, LayerSpec, MLPSpec, attention, decoder_layer, graph_weights, layer_graph,
                            mlp, modules, project_qkv)


# How each LLaMA-shaped family departs from LLaMA is declared by the family (models/<family>/__init__.py) and
# looked up by config.model_type; attention / MLP replacements are "module:name" strings imported on first use,
# so this file imports no family.


class LlamaRMSNorm(nn.Cell):
    """offset (Gemma): scales by (1 + weight), computed in float32; its weights start at 0."""

    def __init__(self, hidden_size, eps=1e-6, dtype=ms.float32, offset=False):
        super().__init__()
        self.weight = new_parameter((hidden_size,), dtype, "zeros" if offset else "ones")
        self.variance_epsilon = eps
        self.offset = offset

    def construct(self, hidden_states):
        return self.construct_with({"weight": self.weight}, hidden_states)

    def construct_with(self, params, hidden_states):
        """The norm with `params["weight"]` (tensor parallelism hands in the weight whose gradient it sums)."""
        weight = params["weight"].astype(ms.float32) + 1.0 if self.offset else params["weight"]
        return fused.rms_norm(hidden_states, weight, self.variance_epsilon)


def make_norm(config, size, dtype, variant=None):
    """The family's norm over `size`: LlamaRMSNorm (Gemma's (1 + w) when norm_offset), or a LayerNorm with bias
    (StarCoder2, Phi), its eps read from the config field the family names."""
    variant = variant or decoder_variant(config)
    eps = getattr(config, variant.eps)
    if variant.layer_norm:
        return LayerNorm(size, eps, dtype)
    return LlamaRMSNorm(size, eps, dtype, variant.norm_offset)


def norm_eps(cell):
    return cell.eps if isinstance(cell, LayerNorm) else cell.variance_epsilon


def config_flag(config, value, field):
    """A variant's bias switch: a bool as it is, a str the config field of that name, None the field `field`."""
    if isinstance(value, bool):
        return value
    return bool(getattr(config, field if value is None else value, False))


class LlamaRotaryEmbedding(nn.Cell):
    """cos/sin tables [B, S, head_dim] for the given positions; "dynamic" rope rescales past max positions.
    layer_type: the entry of a `rope_parameters` keyed by layer type (Gemma 3: its sliding layers' own base)."""

    def __init__(self, config, layer_type=None):
        super().__init__()
        self.config = config
        self.layer_type = layer_type
        self.rope_type = rope_parameters(config, layer_type)["rope_type"]
        inv_freq, self.attention_scaling = compute_inv_freq(config, layer_type=layer_type)
        self.inv_freq = ms.Tensor(inv_freq)

    def construct(self, x, position_ids):
        inv_freq = self.inv_freq
        if self.rope_type == "dynamic":
            seq_len = int(position_ids.max().asnumpy()) + 1
            if seq_len > self.config.max_position_embeddings:
                inv_freq = ms.Tensor(compute_inv_freq(self.config, seq_len, self.layer_type)[0])
        elif self.rope_type == "longrope":  # Phi3: long factors once positions outgrow the pretraining length
            seq_len = int(position_ids.max().asnumpy()) + 1
            inv_freq = ms.Tensor(compute_inv_freq(self.config, seq_len, self.layer_type)[0])
        freqs = position_ids.astype(ms.float32).expand_dims(-1) * inv_freq          # [B, S, D/2]
        emb = ops.cat((freqs, freqs), -1)                                            # [B, S, D]
        cos = ops.cos(emb) * self.attention_scaling
        sin = ops.sin(emb) * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


class LlamaMLP(nn.Cell):
    # tensor-parallel layout (parallel/plan.py): gate/up rows and down columns split by channel
    _tp_plan = {"gate_proj": ("colwise", "intermediate_size"), "up_proj": ("colwise", "intermediate_size"),
                "gate_up_proj": ("colwise", "intermediate_size", "intermediate_size"),
                "down_proj": ("rowwise", "intermediate_size")}

    def __init__(self, config, dtype=ms.float32, intermediate_size=None):
        super().__init__()
        variant = decoder_variant(config)
        hidden, bias = config.hidden_size, config_flag(config, variant.mlp_bias, "mlp_bias")
        inter = intermediate_size or config.intermediate_size  # MoE shared experts are narrower or wider
        std = config.initializer_range
        self.tp_units = {"intermediate_size": (inter, 1, False)}
        self.fused_gate_up = variant.fused_gate_up
        self.proj_names = gate, up, down = variant.mlp_names
        if self.proj_names != ("gate_proj", "up_proj", "down_proj"):  # the layout under the family's names
            plan = type(self)._tp_plan
            self._tp_plan = {**({gate: plan["gate_proj"]} if gate else {}), up: plan["up_proj"],
                             "gate_up_proj": plan["gate_up_proj"], down: plan["down_proj"]}
        if self.fused_gate_up:
            self.gate_up_proj = Linear(hidden, 2 * inter, bias, dtype, std=std)
        else:
            if gate:
                setattr(self, gate, Linear(hidden, inter, bias, dtype, std=std))
            setattr(self, up, Linear(hidden, inter, bias, dtype, std=std))
        setattr(self, down, Linear(inter, hidden, bias, dtype, std=std))
        self.activation = getattr(config, variant.activation)
        get_activation(self.activation, f"MLP {variant.activation}")  # a clear error now, not at the first call

    def spec(self):
        return MLPSpec(self.intermediate_size, self.fused_gate_up, self.activation, self.proj_names)

    def construct(self, x):  # decoder_layer.py's `mlp`, over this module's own projections
        return mlp(self.spec(), modules(self, "mlp."), x)

    @property
    def intermediate_size(self):
        """This module's width, read from its weight (a tensor-parallel rank's share after the split)."""
        return getattr(self, self.proj_names[2]).weight.shape[1]


class LlamaAttention(nn.Cell):
    # tensor-parallel layout (parallel/plan.py): q/k/v rows and o_proj columns split by whole heads; a fused
    # qkv_proj per block (all q heads, then k, then v); KV heads shared by ranks when fewer than ranks
    _tp_plan = {"q_proj": ("colwise", "num_attention_heads"), "k_proj": ("colwise", "num_key_value_heads"),
                "v_proj": ("colwise", "num_key_value_heads"),
                "qkv_proj": ("colwise", "num_attention_heads", "num_key_value_heads", "num_key_value_heads"),
                "o_proj": ("rowwise", "num_attention_heads"),
                # per-head norms (Qwen3, Gemma 3): whole on every rank, applied to its heads only, so the
                # gradient of their weight is summed over the ranks (HF's plan names the same style)
                "q_norm": "replicated_with_grad_allreduce", "k_norm": "replicated_with_grad_allreduce",
                # gpt-oss: one sink logit per query head, split in place with the heads
                "sinks": ("colwise", "num_attention_heads:sinks")}
    # OLMo 2's q/k norms span the whole projection: their weight split with its heads, the sum of squares
    # all-reduced (HF gathers q/k/v instead and replicates the attention; this keeps the heads and cache split)
    _tp_plan_whole_norms = {"q_norm": ("sharded_rms_norm", "num_attention_heads"),
                            "k_norm": ("sharded_rms_norm", "num_key_value_heads")}

    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        self.layer_idx = layer_idx
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.tp_units = {"num_attention_heads": (heads, self.head_dim, False),
                         "num_key_value_heads": (kv_heads, self.head_dim, True),
                         "num_attention_heads:sinks": (heads, 1, False)}
        # Gemma 2/3 scale queries by query_pre_attn_scalar ** -0.5 and soft-cap the scores
        self.scaling = (getattr(config, "query_pre_attn_scalar", None) or self.head_dim) ** -0.5
        self.softcap = getattr(config, "attn_logit_softcapping", None)
        variant = decoder_variant(config)
        if self.softcap is not None and not variant.attn_softcap:
            warn_once(f"{config.model_type}: attn_logit_softcapping={self.softcap} is ignored, as transformers' "
                      "modeling file for it ignores it")
            self.softcap = None
        # HF's field, set by from_pretrained(attn_implementation=...); the ops registry maps it to a kernel
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        bias, std = getattr(config, "attention_bias", False), config.initializer_range
        qkv_bias = getattr(config, "qkv_bias", bias) if variant.qkv_bias is None else config_flag(
            config, variant.qkv_bias, "attention_bias")
        o_bias = config_flag(config, variant.o_bias, "attention_bias")
        q_size, kv_size = heads * self.head_dim, kv_heads * self.head_dim
        self.fused_qkv = variant.fused_qkv
        if self.fused_qkv:
            self.qkv_proj = Linear(config.hidden_size, q_size + 2 * kv_size, qkv_bias, dtype, std=std)
        else:
            self.q_proj = Linear(config.hidden_size, q_size, qkv_bias, dtype, std=std)
            self.k_proj = Linear(config.hidden_size, kv_size, qkv_bias, dtype, std=std)
            self.v_proj = Linear(config.hidden_size, kv_size, qkv_bias, dtype, std=std)
        self.o_name = variant.o_name
        setattr(self, self.o_name, Linear(q_size, config.hidden_size, o_bias, dtype, std=std))
        self.qk_norm, self.qk_norm_whole = variant.qk_norm, variant.qk_norm_whole
        if self.o_name != "o_proj" or self.qk_norm_whole:  # the layout under this instance's names (Phi: dense)
            plan = {k: v for k, v in type(self)._tp_plan.items() if k != "o_proj"}
            self._tp_plan = {**plan, self.o_name: type(self)._tp_plan["o_proj"],
                             **(self._tp_plan_whole_norms if self.qk_norm_whole else {})}
        self.norm_offset = variant.norm_offset
        if self.qk_norm:  # per head, or (OLMo 2) over the whole projection
            self.q_norm = make_norm(config, q_size if self.qk_norm_whole else self.head_dim, dtype, variant)
            self.k_norm = make_norm(config, kv_size if self.qk_norm_whole else self.head_dim, dtype, variant)
        if getattr(config, "qk_layernorm", False):
            raise NotImplementedError(f"{config.model_type}: qk_layernorm=True (LayerNorm on queries and keys)")
        self.interleaved_rotary = variant.interleaved_rotary
        self.has_sinks = variant.sinks  # gpt-oss
        if self.has_sinks:
            self.sinks = new_parameter((heads,), dtype, "normal", std)
        # SmolLM3: `no_rope_layers[i]` is 0 on the layers without rotary (NoPE), 1 on the others
        no_rope_layers = getattr(config, "no_rope_layers", None)
        self.rope = bool(no_rope_layers[layer_idx]) if no_rope_layers else True

    @property
    def num_heads(self):
        """Query heads, read from o_proj's input width (a tensor-parallel rank's share after the split)."""
        return getattr(self, self.o_name).weight.shape[1] // self.head_dim

    @property
    def num_key_value_heads(self):
        if self.fused_qkv:
            return (self.qkv_proj.weight.shape[0] // self.head_dim - self.num_heads) // 2
        return self.k_proj.weight.shape[0] // self.head_dim

    def spec(self):
        return AttentionSpec(self.num_heads, self.num_key_value_heads, self.head_dim, float(self.scaling),
                             self.attn_implementation, self.fused_qkv, self.qk_norm,
                             float(norm_eps(self.q_norm)) if self.qk_norm else 0.0, self.interleaved_rotary,
                             None if self.softcap is None else float(self.softcap), self.norm_offset,
                             self.qk_norm_whole, self.rope, self.o_name, self.has_sinks)

    def project_qkv(self, hidden_states):
        """[B, S, hidden] -> q [B, H, S, D], k and v [B, KV, S, D] (q and k normed per head when qk_norm)."""
        return project_qkv(self.spec(), {"self_attn": self, **modules(self, "self_attn.")}, hidden_states)

    def construct(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None):
        # decoder_layer.py's `attention`, over this module's own projections
        weights = {"self_attn": self, **modules(self, "self_attn.")}
        return attention(self.spec(), weights, hidden_states, cos, sin, attention_mask, past_key_values,
                         self.layer_idx)[0]


class LlamaDecoderLayer(nn.Cell):
    # its construct reads modules by name (decoder_layer.py), which `ms.jit` cannot parse: compiled, the layer runs
    # as LlamaModel's shared graph instead (compiled_layers.py)
    jit_construct = False

    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        variant = decoder_variant(config)
        attention = import_object(variant.attention) if variant.attention else LlamaAttention
        self.self_attn = attention(config, layer_idx, dtype)
        self.mlp = import_object(variant.mlp)(config, layer_idx, dtype) if variant.mlp else LlamaMLP(config, dtype)
        self.sandwich_norm, self.norm_names = variant.sandwich_norm, variant.norm_names
        self.norm_offset, self.parallel_residual = variant.norm_offset, variant.parallel_residual
        pre_attn, post_attn, pre_mlp, post_mlp = self.norm_names
        names = (pre_attn, post_attn, pre_mlp, post_mlp) if self.sandwich_norm else (pre_attn, pre_mlp)
        if self.parallel_residual:  # Phi: input_layernorm feeds attention and MLP
            names = (pre_attn,)
        for name in filter(None, names):  # in HF's order, as the modules are listed in HF's layer
            setattr(self, name, make_norm(config, config.hidden_size, dtype, variant))
        self.layer_idx = layer_idx  # the cache slot decoder_layer writes (an own attention module keeps its own)
        # the mask this layer reads: Qwen2/3 name full or sliding-window attention per layer in `layer_types`
        layer_types = getattr(config, "layer_types", None)
        self.attention_type = layer_types[layer_idx] if layer_types else "full_attention"

    def spec(self):
        """The layer's static description for decoder_layer.py; an attention or MLP module of a family's own
        (DeepSeek's latent attention, Baichuan's ALiBi, MoE) is left to run as itself."""
        attn, mlp_module = self.self_attn, self.mlp
        norm = next(getattr(self, n) for n in self.norm_names if n and hasattr(self, n))
        return LayerSpec(attn.spec() if type(attn) is LlamaAttention else None,
                         mlp_module.spec() if type(mlp_module) is LlamaMLP else None,
                         float(norm_eps(norm)), self.sandwich_norm, self.norm_names, self.norm_offset,
                         self.parallel_residual)

    def graph_spec(self):
        """The spec when LlamaModel may run this layer as the shared compiled graph (its parameters as graph
        inputs), else None: the attention and MLP are LLaMA's, its projections plain `Linear`s (LoRA,
        tensor-parallel and other wrappers stay eager) and its norms share one eps."""
        spec = self.spec()
        if spec.attention is None:
            return None
        if spec.mlp is None:  # a sparse MoE block says whether it can run in the graph (MixtralSparseMoeBlock)
            moe_spec = getattr(self.mlp, "graph_spec", lambda: None)()
            if moe_spec is None:
                return None
            spec = dataclasses.replace(spec, moe=moe_spec)
        for name, cell in self.cells_and_names():
            if type(cell) in (LlamaRMSNorm, LayerNorm) and norm_eps(cell) != spec.eps:
                return None
            if spec.moe is not None and (name == "mlp" or name.startswith("mlp.")):
                continue  # checked by the block's graph_spec
            if type(cell) not in (LlamaDecoderLayer, LlamaAttention, LlamaMLP, LlamaRMSNorm, LayerNorm, Linear):
                return None
        return spec

    def construct(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None):
        # decoder_layer.py's `decoder_layer` over the modules (the compiled path runs it over the weights)
        return decoder_layer(self.spec(), modules(self), hidden_states, cos, sin, attention_mask,
                             past_key_values, self.layer_idx)[0]


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
        if getattr(config, "use_bidirectional_attention", False):  # EmbeddingGemma
            raise NotImplementedError(f"{config.model_type}: use_bidirectional_attention=True (bidirectional "
                                      "attention) is not supported")
        variant = decoder_variant(config)
        self.final_norm = variant.final_norm  # Phi: final_layernorm
        setattr(self, self.final_norm, make_norm(config, config.hidden_size, dtype, variant))
        # Gemma: HF's embedding module multiplies by sqrt(hidden_size) rounded to the weights' dtype (only
        # embeddings it looks up: inputs_embeds given by the caller are used as they are)
        self.embed_scale = config.hidden_size ** 0.5 if variant.embed_scale else None
        # Gemma 3: `rope_parameters` keyed by layer type, one table per type
        self.rotary_per_type = rope_per_layer_type(config)
        if self.rotary_per_type:
            self.rotary_emb = nn.CellDict({t: LlamaRotaryEmbedding(config, t) for t in self.rotary_per_type})
        else:
            self.rotary_emb = LlamaRotaryEmbedding(config)

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
            if self.embed_scale is not None:
                inputs_embeds = inputs_embeds * ms.Tensor(self.embed_scale, ms.float32).astype(inputs_embeds.dtype)
        packed = packed_sequence_ids(position_ids, attention_mask, use_cache, past_key_values, self.config)
        use_cache = default_use_cache(self, use_cache)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        bsz, q_len = inputs_embeds.shape[0], inputs_embeds.shape[1]
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = (ops.arange(q_len, dtype=ms.int32) + past_len).reshape(1, q_len)
        masks = self.causal_masks(attention_mask, bsz, q_len, past_len, packed)

        hidden_states = inputs_embeds
        if self.rotary_per_type:
            rope = {t: self.rotary_emb[t](hidden_states, position_ids) for t in self.rotary_per_type}
        else:
            rope = dict.fromkeys(("full_attention", "sliding_attention"), self.rotary_emb(hidden_states, position_ids))
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        # inside `compiled_layers(model, mode)` (generate's prefill, the serving engine's first chunks, Trainer
        # steps) layers with a graph_spec run as one shared compiled graph (decoder_layer.py); in a prefill each
        # writes its keys and values into the (empty) cache itself
        mode = compile_mode(self)
        compiled = mode is not None and past_len == 0 and q_len > 1
        for index, layer in enumerate(self.layers):
            mask = masks[layer.attention_type]
            cos, sin = rope[layer.attention_type]
            # a recomputing layer (activation checkpointing) runs eagerly: ms.recompute takes a Cell
            spec = layer.graph_spec() if compiled and mask is not None and not recomputes(layer) else None
            if spec is None:
                hidden_states = call_layer(layer, hidden_states, cos, sin, mask, past_key_values=past_key_values)
            else:
                last_only = mode == "prefill" and index == len(self.layers) - 1 and not output_hidden_states
                graph = layer_graph(spec, past_key_values is not None, last_only)
                hidden_states = graph(hidden_states, cos, sin, mask, graph_weights(layer, mode not in ("prefill", "score")))
                if past_key_values is not None:
                    hidden_states, keys, values = hidden_states
                    past_key_values.update(keys, values, layer.layer_idx)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = getattr(self, self.final_norm)(hidden_states)
        if output_hidden_states:  # as in HF, the last entry is the normed final state
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        out = BaseModelOutputWithPast(last_hidden_state=hidden_states,
                                      past_key_values=past_key_values,
                                      hidden_states=all_hidden_states)
        return out.to_tuple() if return_dict is False else out

    def compiles_layers(self):
        """Whether `compiled_layers(model, "prefill" | "score" | "train")` would compile any of these layers."""
        return any(layer.graph_spec() is not None for layer in self.layers)

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
    _tp_plan = {"lm_head": "colwise_gather_output"}  # HF's: vocab rows split, logits gathered

    _base_model_class = None  # the transformer under the head: LlamaModel unless a family's differs

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.model = (self._base_model_class or LlamaModel)(config, dtype)
        self.vocab_size = config.vocab_size
        # Tied checkpoints store no lm_head.weight: the embedding matrix serves as the head.
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        self.head_bias = decoder_variant(config).lm_head_bias  # Phi
        if self.tied and self.head_bias:
            raise NotImplementedError(f"{config.model_type}: tie_word_embeddings=True with the LM head's bias")
        if not self.tied:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, self.head_bias, dtype,
                                  std=config.initializer_range)

    def get_output_embeddings(self):
        return self.model.embed_tokens if self.tied else self.lm_head

    def lm_logits(self, hidden_states):
        head = self.get_output_embeddings()
        if hasattr(head, "parallel_logits"):  # tensor parallel (parallel/plan.py): each rank holds a vocab slice
            logits = head.parallel_logits(hidden_states)
        else:
            weight = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
            shape = hidden_states.shape
            logits = fused.linear(hidden_states.reshape(-1, shape[-1]), weight)
            logits = logits.reshape(shape[:-1] + (weight.shape[0],))
            if self.head_bias:
                logits = logits + self.lm_head.bias
        cap = getattr(self.config, "final_logit_softcapping", None)  # Gemma 2/3
        return logits if cap is None else ops.tanh(logits / cap) * cap

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, logits_to_keep=0, num_items_in_batch=None, **kwargs):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                             **kwargs)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and 0 < logits_to_keep < hidden_states.shape[1]:
            # narrow, not a [:, -k:, :] slice: under a trace (the compiled decode steps) MindSpore's tuple
            # indexing compiles a graph that reads os.environ (one InterpretGetAttrNode warning per new shape)
            hidden_states = hidden_states.narrow(1, hidden_states.shape[1] - logits_to_keep, logits_to_keep)
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
