"""Whisper in MindSpore with HF parameter names (`WhisperModel`, `WhisperForConditionalGeneration`).

Read top to bottom as transformers' modeling_whisper.py: conv front end, attention, encoder layer, decoder
layer, encoder, decoder, base model, head. The encoder turns log-mel features [B, mel, 2 * 1500] into
1500 frames with two width-3 convolutions + GELU (the second strides by 2) and adds the positions table
`embed_positions` (sinusoids, stored in checkpoints); its layers are pre-norm with LayerNorm. The decoder
adds learned positions, runs causal self-attention (KV cache) and cross-attention over the encoder output,
whose keys/values are computed at the first call and reused (EncoderDecoderCache). `proj_out` is tied to
`model.decoder.embed_tokens` unless the config says otherwise. Whisper's `generate` is generation_whisper.py.
"""
import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...layers import Embedding, LayerNorm, Linear, new_parameter
from ...loss_utils import token_classification_loss
from ...masking_utils import create_causal_mask
from ...modeling_outputs import BaseModelOutput, BaseModelOutputWithPast, Seq2SeqLMOutput, Seq2SeqModelOutput
from ...modeling_utils import PreTrainedModel
from ...utils import activation_dtype, warn_once
from .generation_whisper import WhisperGenerationMixin

_ACTIVATIONS = {  # transformers' ACT2FN names -> classic ops with CPU kernels
    "gelu": lambda x: ops.gelu(x, approximate="none"),
    "gelu_new": lambda x: ops.gelu(x, approximate="tanh"),
    "relu": ops.relu,
    "silu": ops.silu,
    "swish": ops.silu,
}


def _activation(name):
    if name not in _ACTIVATIONS:
        raise NotImplementedError(f"Whisper activation_function {name!r} is not supported "
                                  f"(supported: {', '.join(sorted(_ACTIVATIONS))})")
    return _ACTIVATIONS[name]


class Conv1d(nn.Cell):
    """torch.nn.Conv1d(kernel_size=3, padding=1) with weight [out, in, 3] and bias [out], computed as one matmul
    over the three shifted input views (im2col): x [B, in, T] -> [B, T_out, out], already in the frame-major
    layout the encoder needs next."""

    def __init__(self, in_channels, out_channels, stride=1, dtype=ms.float32, std=0.02):
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.kernel_size = in_channels, out_channels, stride, 3
        self.weight = new_parameter((out_channels, in_channels, 3), dtype, "normal", std)
        self.bias = new_parameter((out_channels,), dtype, "zeros")

    def construct(self, x):
        bsz, channels, length = x.shape
        out_len = (length - 1) // self.stride + 1  # (T + 2 * padding - kernel) // stride + 1
        xp = ops.pad(x, (1, 1))                                                     # [B, in, T + 2]
        span = self.stride * (out_len - 1) + 1
        cols = ops.stack([xp[:, :, k:k + span:self.stride] for k in range(3)], -1)  # [B, in, T_out, 3]
        cols = cols.transpose(0, 2, 1, 3).reshape(bsz * out_len, channels * 3)     # [B*T_out, in*3]
        y = fused.linear(cols, self.weight.reshape(self.out_channels, channels * 3)) + self.bias
        return y.reshape(bsz, out_len, self.out_channels)


class WhisperAttention(nn.Cell):
    """Multi-head attention; `k_proj` has no bias. As in HF, q is scaled before the product (Whisper's
    original order: the rounding differs from scaling the scores)."""

    def __init__(self, config, num_heads, layer_idx=None, is_causal=False, dtype=ms.float32):
        super().__init__()
        self.embed_dim = config.d_model
        self.num_heads = num_heads
        self.head_dim = self.embed_dim // num_heads
        if self.head_dim * num_heads != self.embed_dim:
            raise ValueError(f"d_model ({self.embed_dim}) must be divisible by the number of heads ({num_heads})")
        self.scaling = self.head_dim ** -0.5
        self.layer_idx, self.is_causal = layer_idx, is_causal
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        std = config.init_std
        self.k_proj = Linear(self.embed_dim, self.embed_dim, False, dtype, std=std)
        self.v_proj = Linear(self.embed_dim, self.embed_dim, True, dtype, std=std)
        self.q_proj = Linear(self.embed_dim, self.embed_dim, True, dtype, std=std)
        self.out_proj = Linear(self.embed_dim, self.embed_dim, True, dtype, std=std)

    def _heads(self, x):  # [B, S, E] -> [B, H, S, D]
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).swapaxes(1, 2)

    def construct(self, hidden_states, key_value_states=None, cache=None, attention_mask=None):
        bsz, q_len, _ = hidden_states.shape
        q = self._heads(self.q_proj(hidden_states) * self.scaling)
        if key_value_states is not None:  # cross-attention: keys/values of the encoder output, once per cache
            layers = cache.cross_attention_cache if cache is not None else None
            if cache is not None and cache.is_updated.get(self.layer_idx):
                k, v = layers.key_cache[self.layer_idx], layers.value_cache[self.layer_idx]
            else:
                k, v = self._heads(self.k_proj(key_value_states)), self._heads(self.v_proj(key_value_states))
                if cache is not None:
                    k, v = layers.update(k, v, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            k, v = self._heads(self.k_proj(hidden_states)), self._heads(self.v_proj(hidden_states))
            if cache is not None:
                k, v = cache.self_attention_cache.update(k, v, self.layer_idx)
        out = fused.causal_attention(q, k, v, attention_mask, 1.0,
                                     attn_implementation=self.attn_implementation)  # [B, H, S, D]
        return self.out_proj(out.swapaxes(1, 2).reshape(bsz, q_len, self.embed_dim))

    def cross_attention_probs(self, hidden_states, key_value_states, heads):
        """Eager softmax(q k^T) of cross-attention for the given heads only, [B, len(heads), S, frames] (the
        fused kernels return no probabilities; word timestamps need them for the alignment heads)."""
        heads = ms.Tensor(list(heads), ms.int32)
        q = ops.gather(self._heads(self.q_proj(hidden_states) * self.scaling), heads, 1)
        k = ops.gather(self._heads(self.k_proj(key_value_states)), heads, 1)
        scores = ops.matmul(q.astype(ms.float32), k.astype(ms.float32).swapaxes(-1, -2))
        return ops.softmax(scores, -1)


class WhisperEncoderLayer(nn.Cell):
    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        dim, std = config.d_model, config.init_std
        self.self_attn = WhisperAttention(config, config.encoder_attention_heads, dtype=dtype)
        self.self_attn_layer_norm = LayerNorm(dim, 1e-5, dtype)
        self.act = _activation(config.activation_function)
        self.fc1 = Linear(dim, config.encoder_ffn_dim, True, dtype, std=std)
        self.fc2 = Linear(config.encoder_ffn_dim, dim, True, dtype, std=std)
        self.final_layer_norm = LayerNorm(dim, 1e-5, dtype)
        self.dropout = nn.Dropout(p=config.dropout)
        self.activation_dropout = nn.Dropout(p=config.activation_dropout)

    def construct(self, hidden_states):
        hidden_states = hidden_states + self.dropout(self.self_attn(self.self_attn_layer_norm(hidden_states)))
        mlp = self.activation_dropout(self.act(self.fc1(self.final_layer_norm(hidden_states))))
        return hidden_states + self.dropout(self.fc2(mlp))


class WhisperDecoderLayer(nn.Cell):
    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        dim, std, heads = config.d_model, config.init_std, config.decoder_attention_heads
        self.self_attn = WhisperAttention(config, heads, layer_idx, is_causal=True, dtype=dtype)
        self.self_attn_layer_norm = LayerNorm(dim, 1e-5, dtype)
        self.encoder_attn = WhisperAttention(config, heads, layer_idx, dtype=dtype)
        self.encoder_attn_layer_norm = LayerNorm(dim, 1e-5, dtype)
        self.act = _activation(config.activation_function)
        self.fc1 = Linear(dim, config.decoder_ffn_dim, True, dtype, std=std)
        self.fc2 = Linear(config.decoder_ffn_dim, dim, True, dtype, std=std)
        self.final_layer_norm = LayerNorm(dim, 1e-5, dtype)
        self.dropout = nn.Dropout(p=config.dropout)
        self.activation_dropout = nn.Dropout(p=config.activation_dropout)

    def construct(self, hidden_states, attention_mask, encoder_hidden_states, cache):
        hidden_states = hidden_states + self.dropout(
            self.self_attn(self.self_attn_layer_norm(hidden_states), cache=cache, attention_mask=attention_mask))
        if encoder_hidden_states is not None:
            hidden_states = hidden_states + self.dropout(self.encoder_attn(
                self.encoder_attn_layer_norm(hidden_states), key_value_states=encoder_hidden_states, cache=cache))
        mlp = self.activation_dropout(self.act(self.fc1(self.final_layer_norm(hidden_states))))
        return hidden_states + self.dropout(self.fc2(mlp))


class WhisperPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    main_input_name = "input_features"
    _no_split_modules = ["WhisperEncoderLayer", "WhisperDecoderLayer"]

    @staticmethod
    def _is_head_key(key):
        return key.startswith("proj_out.")

    def _skip_key(self, name):
        if name == "proj_out.weight" and getattr(self.config, "tie_word_embeddings", True):
            return True  # tied: the decoder's embedding serves as the head
        return super()._skip_key(name)

    def get_input_embeddings(self):
        base = getattr(self, self.base_model_prefix, self)
        return base.decoder.embed_tokens

    def set_input_embeddings(self, value):
        getattr(self, self.base_model_prefix, self).decoder.embed_tokens = value

    def _get_feat_extract_output_lengths(self, input_lengths):
        """Frames after the conv front end (the second conv strides by 2)."""
        return (input_lengths - 1) // 2 + 1


class WhisperEncoder(nn.Cell):
    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        self.config = config
        dim = config.d_model
        self.max_source_positions = config.max_source_positions
        self.conv1 = Conv1d(config.num_mel_bins, dim, 1, dtype, config.init_std)
        self.conv2 = Conv1d(dim, dim, 2, dtype, config.init_std)
        self.embed_positions = Embedding(self.max_source_positions, dim, dtype, std=config.init_std,
                                         index_name="position id")
        self.embed_positions.weight.requires_grad = False  # HF freezes the sinusoids
        self.layers = nn.CellList([WhisperEncoderLayer(config, dtype) for _ in range(config.encoder_layers)])
        self.layer_norm = LayerNorm(dim, 1e-5, dtype)
        self.dropout = nn.Dropout(p=config.dropout)

    def construct(self, input_features, output_hidden_states=False):
        expected = self.max_source_positions * self.conv1.stride * self.conv2.stride
        if input_features.shape[-1] != expected:
            raise ValueError(f"Whisper expects the mel input features to be of length {expected}, but found "
                             f"{input_features.shape[-1]}. Make sure to pad the input mel features to {expected}.")
        dtype = activation_dtype(self.conv1.weight.dtype)  # bf16 weights on CPU: float32 activations
        if input_features.dtype != dtype:
            input_features = input_features.astype(dtype)
        gelu = _ACTIVATIONS["gelu"]  # the front end's GELU is fixed, whatever activation_function says
        hidden = gelu(self.conv1(input_features)).swapaxes(1, 2)                   # [B, dim, 3000]
        hidden = gelu(self.conv2(hidden))                                          # [B, 1500, dim]
        hidden_states = self.dropout(hidden + self.embed_positions.weight)
        all_hidden = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden += (hidden_states,)
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:  # as in HF, the last entry is the normed final state
            all_hidden = all_hidden[:-1] + (hidden_states,)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden)


class WhisperDecoder(nn.Cell):
    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        self.config = config
        dim = config.d_model
        self.max_target_positions = config.max_target_positions
        self.embed_tokens = Embedding(config.vocab_size, dim, dtype, std=config.init_std)
        self.embed_positions = Embedding(self.max_target_positions, dim, dtype, std=config.init_std,
                                         index_name="position id")
        self.layers = nn.CellList([WhisperDecoderLayer(config, i, dtype) for i in range(config.decoder_layers)])
        self.layer_norm = LayerNorm(dim, 1e-5, dtype)
        self.dropout = nn.Dropout(p=config.dropout)

    def construct(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, past_key_values=None,
                  inputs_embeds=None, position_ids=None, use_cache=None, output_hidden_states=False):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of decoder_input_ids or decoder_inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        cache = past_key_values
        if isinstance(cache, DynamicCache) and cache.get_seq_length() == 0:
            cache = EncoderDecoderCache(cache)  # a plain cache: cross-attention needs its own half
        if use_cache and cache is None:
            cache = EncoderDecoderCache()
        bsz, q_len = inputs_embeds.shape[0], inputs_embeds.shape[1]
        past_len = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:  # as HF: positions count from the cache length, padding or not
            position_ids = (ops.arange(q_len, dtype=ms.int32) + past_len).reshape(1, q_len)
        hidden_states = self.dropout(inputs_embeds + self.embed_positions(position_ids))
        mask = create_causal_mask(attention_mask, bsz, q_len, past_len)
        all_hidden = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, encoder_hidden_states, cache if use_cache else None)
            if output_hidden_states:
                all_hidden += (hidden_states,)
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden = all_hidden[:-1] + (hidden_states,)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, past_key_values=cache if use_cache else None,
                                       hidden_states=all_hidden)


def shift_tokens_right(labels, pad_token_id, decoder_start_token_id):
    """Decoder inputs from labels: start token first, labels shifted right, -100 replaced by pad."""
    if pad_token_id is None:
        raise ValueError("self.model.config.pad_token_id has to be defined.")
    start = ops.full((labels.shape[0], 1), decoder_start_token_id, dtype=labels.dtype)
    shifted = ops.cat((start, labels[:, :-1]), 1)
    return ops.where(shifted == -100, ops.full_like(shifted, pad_token_id), shifted)


def _check_unsupported(output_attentions, kwargs, name):
    if output_attentions:
        raise NotImplementedError("output_attentions=True is not supported (the attention kernels do not return "
                                  "probabilities)")
    if kwargs.pop("head_mask", None) is not None or kwargs.pop("decoder_head_mask", None) is not None:
        raise NotImplementedError(f"{name}: head_mask is not supported")
    for key in kwargs:
        warn_once(f"{name}: keyword {key!r} is accepted for compatibility and ignored")


class WhisperModel(WhisperPreTrainedModel):
    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.encoder = WhisperEncoder(config, dtype)
        self.decoder = WhisperDecoder(config, dtype)

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def freeze_encoder(self):
        for param in self.encoder.get_parameters():
            param.requires_grad = False

    def construct(self, input_features=None, attention_mask=None, decoder_input_ids=None,
                  decoder_attention_mask=None, encoder_outputs=None, past_key_values=None,
                  decoder_inputs_embeds=None, decoder_position_ids=None, use_cache=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, cache=None, **kwargs):
        _check_unsupported(output_attentions, kwargs, type(self).__name__)
        if self.training and getattr(self.config, "apply_spec_augment", False):
            warn_once("Whisper: apply_spec_augment (SpecAugment masking of input_features in training) is not "
                      "applied")
        if output_hidden_states is None:
            output_hidden_states = getattr(self.config, "output_hidden_states", False)
        if use_cache is None:
            use_cache = getattr(self.config, "use_cache", True)
        if encoder_outputs is None:
            if input_features is None:
                raise ValueError("You have to specify input_features or encoder_outputs")
            encoder_outputs = self.encoder(input_features, output_hidden_states=output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):  # a tuple, as HF accepts
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            past_key_values=past_key_values if past_key_values is not None else cache,
            inputs_embeds=decoder_inputs_embeds, position_ids=decoder_position_ids, use_cache=use_cache,
            output_hidden_states=output_hidden_states)
        out = Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state, past_key_values=decoder_outputs.past_key_values,
            decoder_hidden_states=decoder_outputs.hidden_states,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states)
        return out.to_tuple() if return_dict is False else out


class WhisperForConditionalGeneration(WhisperGenerationMixin, WhisperPreTrainedModel):
    _tied_weights_keys = {"proj_out.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.model = WhisperModel(config, dtype)
        self.max_target_positions = config.max_target_positions
        self.tied = bool(getattr(config, "tie_word_embeddings", True))
        if not self.tied:
            self.proj_out = Linear(config.d_model, config.vocab_size, False, dtype, std=config.init_std)

    def can_generate(self):
        return True

    def get_encoder(self):
        return self.model.encoder

    def get_decoder(self):
        return self.model.decoder

    def freeze_encoder(self):
        self.model.freeze_encoder()

    def get_output_embeddings(self):
        return self.model.decoder.embed_tokens if self.tied else self.proj_out

    def tie_weights(self, *args, **kwargs):
        if getattr(self.config, "tie_word_embeddings", True) and not self.tied:
            del self.proj_out
            self.tied = True

    def lm_logits(self, hidden_states):
        weight = self.model.decoder.embed_tokens.weight if self.tied else self.proj_out.weight
        shape = hidden_states.shape
        logits = fused.linear(hidden_states.reshape(-1, shape[-1]), weight)
        return logits.reshape(shape[:-1] + (weight.shape[0],))

    def construct(self, input_features=None, attention_mask=None, decoder_input_ids=None,
                  decoder_attention_mask=None, encoder_outputs=None, past_key_values=None,
                  decoder_inputs_embeds=None, decoder_position_ids=None, labels=None, use_cache=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, cache=None,
                  num_items_in_batch=None, **kwargs):
        if labels is not None:
            if labels.shape[1] > self.max_target_positions:
                raise ValueError(f"Labels' sequence length {labels.shape[1]} cannot exceed the maximum allowed "
                                 f"length of {self.max_target_positions} tokens.")
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                       self.config.decoder_start_token_id)
        outputs = self.model(input_features, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                             decoder_attention_mask=decoder_attention_mask, encoder_outputs=encoder_outputs,
                             past_key_values=past_key_values if past_key_values is not None else cache,
                             decoder_inputs_embeds=decoder_inputs_embeds, decoder_position_ids=decoder_position_ids,
                             use_cache=use_cache, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states, **kwargs)
        logits = self.lm_logits(outputs.last_hidden_state)
        loss = None
        if labels is not None:  # HF: plain cross-entropy over the (unshifted) labels, mean over kept tokens
            loss = token_classification_loss(logits, labels, logits.shape[-1])
        out = Seq2SeqLMOutput(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                              decoder_hidden_states=outputs.decoder_hidden_states,
                              encoder_last_hidden_state=outputs.encoder_last_hidden_state,
                              encoder_hidden_states=outputs.encoder_hidden_states)
        return out.to_tuple() if return_dict is False else out
