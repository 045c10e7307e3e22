"""CogVLM2 image chat (`CogVLMForCausalLM`, THUDM/cogvlm2-llama3-chat-19B) in MindSpore with the published parameter
names, read from the repo's modeling_cogvlm.py and visual.py (never run; transformers has no class for it).

The language model is LLaMA-3 (RMSNorm, SwiGLU, grouped KV heads, rotary base 500000 on half-split pairs) where
each layer holds two copies of its projections, the *visual expert*:
  - `self_attn.vision_expert_query_key_value` (with bias) / `language_expert_query_key_value` (no bias): one fused
    [H * D + 2 * KV * D, hidden] projection, rows q then k then v;
  - `self_attn.vision_expert_dense` / `language_expert_dense` (the output projection, no bias);
  - `mlp.vision_mlp` / `mlp.language_mlp` (gate/up/down, SwiGLU).
A token takes the vision copy when it and the next token are both vision tokens (token_type_ids 1), so the last
token of an image run (its end-of-image embedding) goes through the language copy (`expert_masks`). Vision tokens
share positions (`build_position_ids`): the run's first (begin-of-image) and last (end-of-image) count as text, the
ones between all take one position.

The vision tower (`model.vision`) is EVA2-CLIP: a patch convolution, a class embedding and learned positions, layers
with *post*-norm residuals (x + norm(attn(x)), then x + norm(mlp(x))), then the class token dropped, a 2x2 stride-2
convolution over the patch grid, a GLU adapter into the text width (`linear_proj`), and learned begin / end of image
embeddings (`boi`, `eoi`) around it: (image_size / patch_size / 2)^2 + 2 tokens an image. Their embeddings replace
those of the prompt's vision tokens, in order.

Generation (the published `prepare_inputs_for_generation`): positions come from the token types at the prompt; each
new token is a text token one position after the last. `rope_deltas` carries that offset to our decode steps, as
for Qwen2-VL (generation/runner.py `position_offset`).
"""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...activations import activation, get_activation
from ...cache_utils import DynamicCache, default_use_cache
from ...layers import Embedding, LayerNorm, Linear, new_parameter, replace_rows
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from ...modeling_utils import PreTrainedModel
from ...tensor_io import to_mindspore
from ...utils import warn_once
from ..llama.modeling_llama import LlamaMLP
from .configuration_cogvlm2 import ROPE_THETA

LANGUAGE_TOKEN_TYPE = 0
VISION_TOKEN_TYPE = 1


def _host(x):
    if x is None:
        return None
    return x.asnumpy() if isinstance(x, ms.Tensor) else np.asarray(x)


# ---------------------------------------------------------------------------------------------- host index work
def expert_masks(token_type_ids):
    """[B, S] bool: True where a token takes the vision expert (it and the next token are vision tokens)."""
    types = np.asarray(token_type_ids)
    vision = np.zeros(types.shape, bool)
    vision[:, :-1] = (types[:, :-1] == VISION_TOKEN_TYPE) & (types[:, 1:] == VISION_TOKEN_TYPE)
    return vision


def build_position_ids(token_type_ids, attention_mask=None):
    """The published build_position_ids on numpy: [B, S] int64. Padding (attention_mask 0) adds no position; an image
    run's first and last tokens count as text; its other tokens share the position after the first."""
    types = np.array(token_type_ids, dtype=np.int64)
    if attention_mask is not None:
        types[np.asarray(attention_mask) == 0] = -1
    vision = types == VISION_TOKEN_TYPE
    language = types == LANGUAGE_TOKEN_TYPE
    edge = np.zeros(types.shape, bool)                                   # an image run's first and last tokens
    edge[:, 1:] |= vision[:, 1:] & language[:, :-1]
    edge[:, 0] |= vision[:, 0]
    edge[:, :-1] |= vision[:, :-1] & language[:, 1:]
    edge[:, -1] |= vision[:, -1]
    types[edge] = LANGUAGE_TOKEN_TYPE
    vision, language = types == VISION_TOKEN_TYPE, types == LANGUAGE_TOKEN_TYPE
    step = np.zeros(types.shape, np.int64)
    step[:, 1:] = language[:, 1:] | (vision[:, 1:] & language[:, :-1])
    return np.cumsum(step, -1)


def _route(vision_mask, vision, language, x):
    """x [B, S, in] through the vision module at the rows vision_mask [B, S] (numpy) marks, the language module at
    the others (as published: each expert runs on its own rows only): the rows are gathered per expert and the
    outputs put back in order. Without vision tokens only the language module runs, on x as it is."""
    if not vision_mask.any():
        return language(x)
    bsz, seq, width = x.shape
    flat = vision_mask.reshape(-1)
    rows = [np.flatnonzero(flat), np.flatnonzero(~flat)]
    x = x.reshape(-1, width)
    outs = [module(ops.gather(x, ms.Tensor(r.astype(np.int32)), 0)) for module, r in zip((vision, language), rows)
            if len(r)]
    back = np.argsort(np.concatenate(rows)).astype(np.int32)             # concatenated order -> original rows
    out = ops.gather(ops.cat(outs, 0), ms.Tensor(back), 0)
    return out.reshape(bsz, seq, out.shape[-1])


# ---------------------------------------------------------------------------------------------- language model
class CogVLM2RMSNorm(nn.Cell):
    """The published RMSNorm: normalised and scaled in float32, then cast once (LLaMA's casts before scaling)."""

    def __init__(self, hidden_size, eps=1e-5, dtype=ms.float32):
        super().__init__()
        self.weight = new_parameter((hidden_size,), dtype, "ones")
        self.variance_epsilon = eps

    def construct(self, x):
        h = x.astype(ms.float32)
        h = h * ops.rsqrt((h * h).mean(-1, keep_dims=True) + self.variance_epsilon)
        return (self.weight.astype(ms.float32) * h).astype(x.dtype)


class CogVLM2RotaryEmbedding(nn.Cell):
    """cos/sin [B, S, head_dim] for positions [B, S]: base 500000, the frequencies' halves repeated (half-split
    pairs, as LLaMA)."""

    def __init__(self, head_dim):
        super().__init__()
        self.inv_freq = ms.Tensor((1.0 / ROPE_THETA ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
                                  .astype(np.float32))

    def construct(self, x, position_ids):
        freqs = position_ids.astype(ms.float32).expand_dims(-1) * self.inv_freq      # [B, S, D/2]
        emb = ops.cat((freqs, freqs), -1)
        return ops.cos(emb).astype(x.dtype), ops.sin(emb).astype(x.dtype)


class VisionExpertMLP(nn.Cell):
    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        self.language_mlp = LlamaMLP(config, dtype)
        self.vision_mlp = LlamaMLP(config, dtype)

    def construct(self, hidden_states, vision_mask):
        return _route(vision_mask, self.vision_mlp, self.language_mlp, hidden_states)


class VisionExpertAttention(nn.Cell):
    # tensor-parallel layout (parallel/plan.py), the same for both experts' copies: the fused projection's q, k and
    # v rows split by whole heads (KV heads shared by ranks when fewer than ranks), the output projection's columns
    _QKV = ("colwise", "num_attention_heads", "num_multi_query_heads", "num_multi_query_heads")
    _tp_plan = {"vision_expert_query_key_value": _QKV, "language_expert_query_key_value": _QKV,
                "vision_expert_dense": ("rowwise", "num_attention_heads"),
                "language_expert_dense": ("rowwise", "num_attention_heads")}

    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        self.layer_idx = layer_idx
        heads, kv_heads = config.num_attention_heads, config.num_multi_query_heads
        self.head_dim = config.hidden_size // heads
        self.tp_units = {"num_attention_heads": (heads, self.head_dim, False),
                         "num_multi_query_heads": (kv_heads, self.head_dim, True)}
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        hidden, std = config.hidden_size, config.initializer_range
        qkv = hidden + 2 * kv_heads * self.head_dim
        self.vision_expert_query_key_value = Linear(hidden, qkv, True, dtype, std=std)
        self.vision_expert_dense = Linear(hidden, hidden, False, dtype, std=std)
        self.language_expert_query_key_value = Linear(hidden, qkv, False, dtype, std=std)
        self.language_expert_dense = Linear(hidden, hidden, False, dtype, std=std)

    @property
    def num_heads(self):
        """Query heads, read from the output projection's input width (a tensor-parallel rank's share after the
        split)."""
        return self.language_expert_dense.weight.shape[1] // self.head_dim

    @property
    def num_kv_heads(self):
        return (self.language_expert_query_key_value.weight.shape[0] // self.head_dim - self.num_heads) // 2

    def construct(self, hidden_states, vision_mask, cos, sin, attention_mask=None, past_key_values=None):
        bsz, q_len, _ = hidden_states.shape
        heads, kv_heads, head_dim = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = _route(vision_mask, self.vision_expert_query_key_value, self.language_expert_query_key_value,
                     hidden_states)                                                    # [B, S, (H + 2 KV) * D]
        q_size, kv_size = heads * head_dim, kv_heads * head_dim
        q = qkv[..., :q_size].reshape(bsz, q_len, heads, head_dim).swapaxes(1, 2)     # [B, H, S, D]
        k = qkv[..., q_size:q_size + kv_size].reshape(bsz, q_len, kv_heads, head_dim).swapaxes(1, 2)
        v = qkv[..., q_size + kv_size:].reshape(bsz, q_len, kv_heads, head_dim).swapaxes(1, 2)
        q, k = fused.apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        out = fused.causal_attention(q, k, v, attention_mask, head_dim ** -0.5,
                                     attn_implementation=self.attn_implementation)
        out = out.swapaxes(1, 2).reshape(bsz, q_len, q_size)                            # [B, S, H * D]
        return _route(vision_mask, self.vision_expert_dense, self.language_expert_dense, out)


class CogVLM2DecoderLayer(nn.Cell):
    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__()
        self.self_attn = VisionExpertAttention(config, layer_idx, dtype)
        self.mlp = VisionExpertMLP(config, dtype)
        self.input_layernorm = CogVLM2RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.post_attention_layernorm = CogVLM2RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)

    def construct(self, hidden_states, vision_mask, cos, sin, attention_mask=None, past_key_values=None):
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states), vision_mask, cos, sin,
                                                       attention_mask, past_key_values)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states), vision_mask)


# ---------------------------------------------------------------------------------------------- vision tower
class PatchEmbedding(nn.Cell):
    """Conv2d(kernel = stride = patch) as one matmul over the cut patches, the class embedding first, then the learned
    positions added (num_positions must be patches + 1)."""

    def __init__(self, vc, dtype=ms.float32):
        super().__init__()
        width, patch = vc["hidden_size"], vc["patch_size"]
        self.patch, self.width = patch, width
        self.proj = nn.Cell()
        self.proj.weight = new_parameter((width, vc["in_channels"], patch, patch), dtype, "normal")
        self.proj.bias = new_parameter((width,), dtype, "zeros")
        self.cls_embedding = new_parameter((1, width), dtype, "zeros")
        self.position_embedding = Embedding(vc["num_positions"], width, dtype, index_name="position")

    def construct(self, images):
        b, c, h, w = images.shape
        p = self.patch
        patches = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)  # [B, h/p, w/p, C, p, p]
        patches = patches.reshape(b * (h // p) * (w // p), c * p * p)
        weight = self.proj.weight.reshape(self.width, -1)                                  # [width, C * p * p]
        x = (fused.linear(patches.astype(weight.dtype), weight) + self.proj.bias).reshape(b, -1, self.width)
        cls = ops.broadcast_to(self.cls_embedding.reshape(1, 1, self.width).astype(x.dtype), (b, 1, self.width))
        x = ops.cat((cls, x), 1)                                                           # [B, 1 + patches, width]
        return x + self.position_embedding.weight.astype(x.dtype).expand_dims(0)


class VisionAttention(nn.Cell):
    def __init__(self, vc, dtype=ms.float32):
        super().__init__()
        width = vc["hidden_size"]
        self.num_heads = vc["num_heads"]
        self.head_dim = width // self.num_heads
        self.query_key_value = Linear(width, 3 * width, True, dtype)
        self.dense = Linear(width, width, True, dtype)

    def construct(self, x):
        b, n, _ = x.shape
        qkv = self.query_key_value(x).reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        out = fused.causal_attention(qkv[0], qkv[1], qkv[2], None, self.head_dim ** -0.5)   # every token sees all
        return self.dense(out.swapaxes(1, 2).reshape(b, n, -1))


class VisionMLP(nn.Cell):
    def __init__(self, vc, dtype=ms.float32):
        super().__init__()
        self.act = vc["hidden_act"]
        get_activation(self.act, "vision_config hidden_act")
        self.fc1 = Linear(vc["hidden_size"], vc["intermediate_size"], True, dtype)
        self.fc2 = Linear(vc["intermediate_size"], vc["hidden_size"], True, dtype)

    def construct(self, x):
        return self.fc2(activation(self.act, self.fc1(x)))


class VisionLayer(nn.Cell):
    """Post-norm: x + norm(attention(x)), then x + norm(mlp(x))."""

    def __init__(self, vc, dtype=ms.float32):
        super().__init__()
        eps = vc["layer_norm_eps"]
        self.input_layernorm = LayerNorm(vc["hidden_size"], eps, dtype)
        self.attention = VisionAttention(vc, dtype)
        self.mlp = VisionMLP(vc, dtype)
        self.post_attention_layernorm = LayerNorm(vc["hidden_size"], eps, dtype)

    def construct(self, x):
        x = x + self.input_layernorm(self.attention(x))
        return x + self.post_attention_layernorm(self.mlp(x))


class VisionTransformer(nn.Cell):
    def __init__(self, vc, dtype=ms.float32):
        super().__init__()
        self.layers = nn.CellList([VisionLayer(vc, dtype) for _ in range(vc["num_hidden_layers"])])

    def construct(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class GLU(nn.Cell):
    """The adapter into the text width: linear_proj, LayerNorm (eps 1e-5), GELU, then SwiGLU at the text MLP's
    width (silu(gate_proj) * dense_h_to_4h -> dense_4h_to_h); no biases but the norm's."""

    def __init__(self, config, in_features, dtype=ms.float32):
        super().__init__()
        hidden, inter = config.hidden_size, config.intermediate_size
        self.linear_proj = Linear(in_features, hidden, False, dtype)
        self.norm1 = LayerNorm(hidden, 1e-5, dtype)
        self.dense_h_to_4h = Linear(hidden, inter, False, dtype)
        self.gate_proj = Linear(hidden, inter, False, dtype)
        self.dense_4h_to_h = Linear(inter, hidden, False, dtype)

    def construct(self, x):
        x = ops.gelu(self.norm1(self.linear_proj(x)), approximate="none")
        return self.dense_4h_to_h(fused.silu_mul(self.gate_proj(x), self.dense_h_to_4h(x)))


class EVA2CLIPModel(nn.Cell):
    """images [N, C, H, W] -> [N, (grid / 2)^2 + 2, hidden]: boi, the downsampled patches through the GLU, eoi."""

    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        vc = config.vision_config
        width = vc["hidden_size"]
        self.width = width
        self.patch_embedding = PatchEmbedding(vc, dtype)
        self.transformer = VisionTransformer(vc, dtype)
        self.linear_proj = GLU(config, width, dtype)
        self.conv = nn.Cell()  # Conv2d(width, width, kernel 2, stride 2) over the patch grid
        self.conv.weight = new_parameter((width, width, 2, 2), dtype, "normal")
        self.conv.bias = new_parameter((width,), dtype, "zeros")
        self.boi = new_parameter((1, 1, config.hidden_size), dtype, "zeros")
        self.eoi = new_parameter((1, 1, config.hidden_size), dtype, "zeros")

    def construct(self, images):
        x = self.transformer(self.patch_embedding(images))[:, 1:]                     # [N, grid^2, width]
        n, s, width = x.shape
        grid = int(round(s ** 0.5))
        half = grid // 2
        # the 2x2 stride-2 conv as a matmul: each 2x2 block's [width, 2, 2] against the kernel [out, width * 4]
        blocks = x.reshape(n, half, 2, half, 2, width).transpose(0, 1, 3, 5, 2, 4).reshape(n * half * half, -1)
        weight = self.conv.weight.reshape(width, -1)
        x = (fused.linear(blocks, weight) + self.conv.bias).reshape(n, half * half, width)
        x = self.linear_proj(x)                                                        # [N, (grid/2)^2, hidden]
        hidden = x.shape[-1]
        boi = ops.broadcast_to(self.boi.astype(x.dtype), (n, 1, hidden))
        eoi = ops.broadcast_to(self.eoi.astype(x.dtype), (n, 1, hidden))
        return ops.cat((boi, x, eoi), 1)


# ---------------------------------------------------------------------------------------------- models
def _flat_images(images):
    """The published `images` (a list per batch row of [C, H, W] images) or an array [N, C, H, W] -> [N, C, H, W]
    MindSpore tensor, or None when there is none."""
    if images is None:
        return None
    if isinstance(images, (list, tuple)):
        flat = [img for row in images for img in (row if isinstance(row, (list, tuple)) else [row])]
        if not flat:
            return None
        return ms.Tensor(np.stack([np.asarray(_host(to_mindspore(img)), np.float32) for img in flat]))
    images = to_mindspore(images)
    return images if images.shape[0] else None


class CogVLM2PreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    _no_split_modules = ["CogVLM2DecoderLayer", "VisionLayer"]

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """The published names; a base model writes its keys under the causal LM's `model.` prefix, as the other
        remote formats do (the repo's code loads only the causal LM)."""
        params = state_dict if state_dict is not None else dict(self.parameters_and_names())
        prefix = "" if hasattr(self, self.base_model_prefix) else self.base_model_prefix + "."
        out = {prefix + name: p for name, p in params.items()}
        return super().save_pretrained(save_directory, *args, state_dict=out, **kwargs)


class CogVLM2Model(CogVLM2PreTrainedModel):
    """embed_tokens, the decoder layers, norm and the vision tower `vision` (the published CogVLMModel)."""
    static_cache_generation = False  # generate decodes op by op (generation/runner.py DynamicRunner)

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype, std=config.initializer_range)
        self.layers = nn.CellList([CogVLM2DecoderLayer(config, i, dtype) for i in range(config.num_hidden_layers)])
        self.norm = CogVLM2RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.vision = EVA2CLIPModel(config, dtype)
        self.rotary_emb = CogVLM2RotaryEmbedding(config.hidden_size // config.num_attention_heads)
        self.rope_deltas = None  # [B, 1] after a prompt: the next token's position minus its text position

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def encode_images(self, images):
        """images [N, C, H, W] (or the published list of lists) -> [N, tokens per image, hidden]."""
        return self.vision(_flat_images(images))

    def _embed_images(self, inputs_embeds, types, images):
        """The prompt's embeddings with the vision tokens' rows replaced, in order, by the image features."""
        features = self.encode_images(images)
        features = features.reshape(-1, inputs_embeds.shape[-1])
        slots = np.flatnonzero(types.reshape(-1) == VISION_TOKEN_TYPE)
        if len(slots) != features.shape[0]:
            raise ValueError(f"the prompt has {len(slots)} vision tokens (token_type_ids 1) but the images give "
                             f"{features.shape[0]} features")
        return replace_rows(inputs_embeds, slots, features)

    def construct(self, input_ids=None, images=None, token_type_ids=None, attention_mask=None, position_ids=None,
                  past_key_values=None, inputs_embeds=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, cache=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if output_attentions:
            raise NotImplementedError("output_attentions=True is not supported (the published model does not "
                                      "return attention weights either)")
        for key in kwargs:
            warn_once(f"{type(self).__name__}: keyword {key!r} is accepted for compatibility and ignored")
        past_key_values = past_key_values if past_key_values is not None else cache
        use_cache = default_use_cache(self, use_cache)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        bsz, q_len = inputs_embeds.shape[0], inputs_embeds.shape[1]
        types = _host(token_type_ids)
        if types is not None and types.ndim == 1:  # build_conversation_input_ids' 1D row
            types = types.reshape(1, -1)
        if types is None:
            types = np.full((bsz, q_len), LANGUAGE_TOKEN_TYPE, np.int64)
        types = types[:, -q_len:]  # a decode step may pass the whole sequence's types (the published generate)
        mask_np = _host(attention_mask)
        images = _flat_images(images) if past_len == 0 else None
        if images is not None:
            inputs_embeds = self._embed_images(inputs_embeds, types, images)
        elif past_len == 0 and (types == VISION_TOKEN_TYPE).any():
            raise ValueError("token_type_ids mark vision tokens but no images were given")
        if position_ids is None:
            if past_len == 0:  # the published rule: positions from the token types (and padding)
                positions = build_position_ids(types, mask_np[:, -q_len:] if mask_np is not None else None)
                keep = np.ones(types.shape, bool) if mask_np is None else mask_np[:, -q_len:] != 0
                self.rope_deltas = (positions.max(-1, initial=0) + 1 - keep.sum(-1)).reshape(-1, 1)
                position_ids = ms.Tensor(positions)
            else:  # a step called by hand (the published llm_forward): positions after the cache
                position_ids = ms.Tensor(np.arange(past_len, past_len + q_len, dtype=np.int64)[None, :])
        elif past_len == 0:
            self.rope_deltas = None
        mask = create_causal_mask(attention_mask, bsz, q_len, past_len)
        vision_mask = expert_masks(types)
        cos, sin = self.rotary_emb(inputs_embeds, position_ids)
        hidden_states = inputs_embeds
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, vision_mask, cos, sin, mask, past_key_values)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        out = BaseModelOutputWithPast(last_hidden_state=hidden_states, past_key_values=past_key_values,
                                      hidden_states=all_hidden_states)
        return out.to_tuple() if return_dict is False else out


class CogVLM2ForCausalLM(CogVLM2PreTrainedModel):
    """The published CogVLMForCausalLM: CogVLM2Model and `lm_head`; `build_conversation_input_ids` builds a prompt
    (processing_cogvlm2.py)."""
    # the prompt's images and token types reach the prefill forward only (generation/utils.py); the prefill
    # derives its positions from them (generation/runner.py)
    _prefill_inputs = ("images", "token_type_ids")
    _positions_from_inputs = True
    # tensor parallel (tp_plan="auto"): the language model's layers declare their layout (both experts' attention
    # above, LLaMA's MLP for both experts' MLPs), the head is split by vocabulary rows with the logits gathered; the
    # embedding and the vision tower (EVA2-CLIP and its GLU adapter) declare none: replicated on every rank
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.model = CogVLM2Model(config, dtype)
        self.vocab_size = config.vocab_size
        self.lm_head = Linear(config.hidden_size, config.vocab_size, False, dtype, std=config.initializer_range)

    def can_generate(self):
        return True

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def build_conversation_input_ids(self, tokenizer, *, query, history=None, images=None, template_version=None,
                                     answer=None, return_tensors="np"):
        from .processing_cogvlm2 import build_conversation_input_ids

        return build_conversation_input_ids(self.config, tokenizer, query=query, history=history, images=images,
                                            template_version=template_version, answer=answer,
                                            return_tensors=return_tensors)

    def _prepare_attention_mask_for_generation(self, ids, pad, eos):
        """As published: without an attention_mask the prompt is all tokens (its vision tokens are id 128002, the
        pad id the published demos pass to generate)."""
        return np.ones_like(ids)

    def lm_logits(self, hidden_states):
        if hasattr(self.lm_head, "parallel_logits"):  # tensor parallel: each rank holds a vocabulary slice
            return self.lm_head.parallel_logits(hidden_states)
        shape = hidden_states.shape
        logits = fused.linear(hidden_states.reshape(-1, shape[-1]), self.lm_head.weight)
        return logits.reshape(shape[:-1] + (self.lm_head.weight.shape[0],))

    def construct(self, input_ids=None, images=None, token_type_ids=None, attention_mask=None, position_ids=None,
                  past_key_values=None, inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, logits_to_keep=0, num_items_in_batch=None, cache=None,
                  **kwargs):
        outputs = self.model(input_ids=input_ids, images=images, token_type_ids=token_type_ids,
                             attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values if past_key_values is not None else cache,
                             inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, output_attentions=output_attentions, **kwargs)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_logits(hidden_states)
        loss = causal_lm_loss(logits, labels, num_items_in_batch) if labels is not None else None
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                     hidden_states=outputs.hidden_states)
        return out.to_tuple() if return_dict is False else out
