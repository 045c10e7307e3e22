"""GPT-2 in MindSpore with HF parameter names (`GPT2LMHeadModel`: GPT-2, DistilGPT2, many small fine-tunes).

Read top to bottom as transformers' modeling_gpt2.py: Conv1D, attention, MLP, block, base model, LM head.
Unlike LLaMA: weights are OpenAI's Conv1D layout [in, out], positions are a learned table (`wpe`), norms
are LayerNorm with bias, the MLP is fc -> GELU (tanh form, "gelu_new") -> proj, and q/k/v are one fused
`c_attn` projection. Attention itself goes through `mindformers_hf.ops.causal_attention`.
"""
import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...activations import get_activation
from ...cache_utils import DynamicCache, default_use_cache
from ...layers import Embedding, LayerNorm, Linear, call_layer, new_parameter
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask, packed_sequence_ids
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from ...modeling_utils import PreTrainedModel
from ...utils import warn_once


class Conv1D(nn.Cell):
    """OpenAI's "Conv1D", a linear layer whose weight is stored [in, out]: y = x @ W + b. LoRA adapts it as PEFT
    does transformers' Conv1D (`fan_in_fan_out`: the weight is the transpose of a Linear's)."""

    fan_in_fan_out = True
    transposed = True  # (parallel/styles.py splits its weight's columns for "colwise", rows for "rowwise")

    def __init__(self, out_features, in_features, dtype=ms.float32, std=0.02):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = new_parameter((in_features, out_features), dtype, "normal", std)
        self.bias = new_parameter((out_features,), dtype, "zeros")
        self._matmul = ops.MatMul()

    def construct(self, x):
        shape = x.shape
        weight = fused.widen(self.weight, x.dtype)  # bf16 weights on CPU: float32 activations
        y = self._matmul(x.reshape(-1, shape[-1]), weight) + self.bias
        return y.reshape(shape[:-1] + (self.out_features,))


class GPT2Attention(nn.Cell):
    # tensor-parallel layout (parallel/plan.py; transformers has none for GPT-2): c_attn's columns split by whole
    # heads in each of its q, k, v blocks, c_proj's rows by the same heads
    _tp_plan = {"c_attn": ("colwise", "n_head", "n_head", "n_head"), "c_proj": ("rowwise", "n_head")}

    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        self.layer_idx = layer_idx
        self.embed_dim = config.hidden_size
        heads = config.num_attention_heads
        self.head_dim = self.embed_dim // heads
        if self.head_dim * heads != self.embed_dim:
            raise ValueError(f"n_embd ({self.embed_dim}) must be divisible by n_head ({heads})")
        self.tp_units = {"n_head": (heads, self.head_dim, False)}
        self.scaling = self.head_dim ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scaling /= float(layer_idx + 1)
        # reorder_and_upcast_attn only makes HF compute scores in float32, which the kernels always do
        self.attn_pdrop = config.attn_pdrop
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim, dtype, config.initializer_range)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim, dtype, config.initializer_range)
        self.resid_dropout = nn.Dropout(p=config.resid_pdrop)

    @property
    def num_heads(self):
        """Heads, read from c_proj's input width (a tensor-parallel rank's share after the split)."""
        return self.c_proj.weight.shape[0] // self.head_dim

    def construct(self, hidden_states, attention_mask=None, past_key_values=None):
        bsz, q_len, _ = hidden_states.shape
        width = self.num_heads * self.head_dim  # (the hidden size, or this rank's heads' share of it)
        if self.training and self.attn_pdrop > 0:
            warn_once("GPT2: attn_pdrop (dropout on attention probabilities) is not applied in training: the "
                      "attention kernels do not materialise probabilities; resid and embd dropout are applied")
        qkv = self.c_attn(hidden_states)                                             # [B, S, 3E]
        q, k, v = qkv[..., :width], qkv[..., width:2 * width], qkv[..., 2 * width:]
        # [B, S, E] -> [B, H, S, D]
        q = q.reshape(bsz, q_len, self.num_heads, self.head_dim).swapaxes(1, 2)
        k = k.reshape(bsz, q_len, self.num_heads, self.head_dim).swapaxes(1, 2)
        v = v.reshape(bsz, q_len, self.num_heads, self.head_dim).swapaxes(1, 2)
        if past_key_values is not None and past_key_values.is_paged:  # serving's block pool
            out = past_key_values.attend(q, k, v, self.layer_idx, attention_mask, self.scaling,
                                         attn_implementation=self.attn_implementation)
        else:
            if past_key_values is not None:
                k, v = past_key_values.update(k, v, self.layer_idx)
            out = fused.causal_attention(q, k, v, attention_mask, self.scaling,
                                         attn_implementation=self.attn_implementation)  # [B, H, S, D]
        out = out.swapaxes(1, 2).reshape(bsz, q_len, width)
        return self.resid_dropout(self.c_proj(out))


class GPT2MLP(nn.Cell):
    _tp_plan = {"c_fc": ("colwise", "n_inner"), "c_proj": ("rowwise", "n_inner")}  # (as LLaMA's MLP, by channel)

    def __init__(self, intermediate_size, config, dtype=ms.float32):
        super().__init__()
        self.tp_units = {"n_inner": (intermediate_size, 1, False)}
        self.act = get_activation(config.activation_function, "GPT2 activation_function")
        self.c_fc = Conv1D(intermediate_size, config.hidden_size, dtype, config.initializer_range)
        self.c_proj = Conv1D(config.hidden_size, intermediate_size, dtype, config.initializer_range)
        self.dropout = nn.Dropout(p=config.resid_pdrop)

    def construct(self, hidden_states):
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(nn.Cell):
    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        inner_dim = config.n_inner if config.n_inner is not None else 4 * config.hidden_size
        self.ln_1 = LayerNorm(config.hidden_size, config.layer_norm_epsilon, dtype)
        self.attn = GPT2Attention(config, layer_idx, dtype)
        self.ln_2 = LayerNorm(config.hidden_size, config.layer_norm_epsilon, dtype)
        self.mlp = GPT2MLP(inner_dim, config, dtype)

    def construct(self, hidden_states, attention_mask=None, past_key_values=None):
        hidden_states = hidden_states + self.attn(self.ln_1(hidden_states), attention_mask, past_key_values)
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class GPT2PreTrainedModel(PreTrainedModel):
    base_model_prefix = "transformer"
    _input_embed_layer = "wte"
    _no_split_modules = ["GPT2Block"]
    # OpenAI-era checkpoints store the causal mask as buffers `h.N.attn.bias` / `h.N.attn.masked_bias`
    _keys_to_ignore_on_load_unexpected = PreTrainedModel._keys_to_ignore_on_load_unexpected + (
        r"(^|\.)attn\.bias$", r"(^|\.)attn\.masked_bias$")


class GPT2Model(GPT2PreTrainedModel):
    # generate keeps the dynamic cache: a position past n_positions must raise transformers' IndexError, which the
    # compiled static-cache step cannot check (its embedding lookup runs without index checks); serving's engine
    # refuses such requests up front and uses the prebuilt masks (causal_masks)
    static_cache_generation = False

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        if getattr(config, "add_cross_attention", False):
            raise NotImplementedError("GPT2 with add_cross_attention=True (encoder-decoder use) is not supported")
        self.embed_dim = config.hidden_size
        std = config.initializer_range
        self.wte = Embedding(config.vocab_size, self.embed_dim, dtype, std=std)
        self.wpe = Embedding(config.max_position_embeddings, self.embed_dim, dtype, std=std,
                             index_name="position id")  # n_positions: no position past it
        self.drop = nn.Dropout(p=config.embd_pdrop)
        self.h = nn.CellList([GPT2Block(config, i, dtype) for i in range(config.num_hidden_layers)])
        self.ln_f = LayerNorm(self.embed_dim, config.layer_norm_epsilon, dtype)

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, cache=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if output_attentions:
            raise NotImplementedError("output_attentions=True is not supported (the attention kernels do not return "
                                      "probabilities)")
        for key in ("encoder_hidden_states", "encoder_attention_mask"):
            if kwargs.pop(key, None) is not None:
                raise NotImplementedError(f"GPT2: {key} (cross-attention) is not supported")
        for key in kwargs:
            warn_once(f"{type(self).__name__}: keyword {key!r} is accepted for compatibility and ignored")
        past_key_values = past_key_values if past_key_values is not None else cache
        if output_hidden_states is None:
            output_hidden_states = getattr(self.config, "output_hidden_states", False)
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        prebuilt = isinstance(attention_mask, dict)  # {layer type: mask} from the static cache / serving engine
        packed = None if prebuilt else packed_sequence_ids(position_ids, attention_mask, use_cache, past_key_values,
                                                           self.config)
        use_cache = default_use_cache(self, use_cache)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        bsz, q_len = inputs_embeds.shape[0], inputs_embeds.shape[1]
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:  # as HF: positions count from 0 even over left padding
            position_ids = (ops.arange(q_len, dtype=ms.int32) + past_len).reshape(1, q_len)
        hidden_states = inputs_embeds + self.wpe(position_ids)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.wte(token_type_ids)
        hidden_states = self.drop(hidden_states)
        mask = self.causal_masks(attention_mask, bsz, q_len, past_len, packed)["full_attention"]

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for block in self.h:
            hidden_states = call_layer(block, hidden_states, mask, past_key_values=past_key_values)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.ln_f(hidden_states)
        if output_hidden_states:  # as in HF, the last entry is the normed final state
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        out = BaseModelOutputWithPast(last_hidden_state=hidden_states,
                                      past_key_values=past_key_values,
                                      hidden_states=all_hidden_states)
        return out.to_tuple() if return_dict is False else out


    def causal_masks(self, attention_mask, bsz, q_len, past_len, packed=None):
        """{layer type: additive mask}: GPT-2 has full attention only (prebuilt masks pass through)."""
        if isinstance(attention_mask, dict):
            return attention_mask
        mask = create_causal_mask(attention_mask, bsz, q_len, past_len, packed=packed)
        return {"full_attention": mask}


class GPT2LMHeadModel(GPT2PreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}  # an untied head: vocab rows split, logits gathered

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.transformer = GPT2Model(config, dtype)
        # GPT-2 ties the head to wte (tie_word_embeddings defaults to True): tied checkpoints store no lm_head
        self.tied = bool(getattr(config, "tie_word_embeddings", True))
        if not self.tied:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, False, dtype, std=config.initializer_range)

    def can_generate(self):
        return True  # the base class looks for an `lm_head` cell or "CausalLM" in the name; a tied GPT-2 has neither

    def get_output_embeddings(self):
        return self.transformer.wte if self.tied else self.lm_head

    def lm_logits(self, hidden_states):
        head = self.get_output_embeddings()
        if hasattr(head, "parallel_logits"):  # tensor parallel (parallel/plan.py): each rank holds a vocab slice
            return head.parallel_logits(hidden_states)
        weight = self.transformer.wte.weight if self.tied else self.lm_head.weight
        shape = hidden_states.shape
        logits = fused.linear(hidden_states.reshape(-1, shape[-1]), weight)
        return logits.reshape(shape[:-1] + (weight.shape[0],))

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, logits_to_keep=0, num_items_in_batch=None, **kwargs):
        outputs = self.transformer(input_ids=input_ids, past_key_values=past_key_values,
                                   attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
                                   output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                   **kwargs)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and 0 < logits_to_keep < hidden_states.shape[1]:
            # narrow, not a slice: see LlamaForCausalLM (tuple indexing under a trace reads os.environ)
            hidden_states = hidden_states.narrow(1, hidden_states.shape[1] - logits_to_keep, logits_to_keep)
        logits = self.lm_logits(hidden_states)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, num_items_in_batch)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                     hidden_states=outputs.hidden_states)
        return out.to_tuple() if return_dict is False else out


class GPT2ForSequenceClassification(GenericForSequenceClassification, GPT2PreTrainedModel):
    _base_model_class = GPT2Model


class GPT2ForTokenClassification(GenericForTokenClassification, GPT2PreTrainedModel):
    _base_model_class = GPT2Model
    _head_name = "classifier"  # (transformers' GPT-2 name; the generic head's is `score`)
