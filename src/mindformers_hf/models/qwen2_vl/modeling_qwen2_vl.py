"""Qwen2-VL in MindSpore with HF parameter names (`Qwen2VLForConditionalGeneration`, AutoModelForImageTextToText);
Qwen2.5-VL (models/qwen2_5_vl) is the same classes with its vision variant.

Read as transformers 5's modeling_qwen2_vl.py: the vision tower (vision_qwen2_vl.py), M-RoPE, the text model, the
multimodal model, the head. The text decoder is LLaMA's (models/llama) with Qwen2's biases; M-RoPE changes only
the cos/sin tables fed to it: positions [3, B, S] (temporal, height, width) each rotate their section of the
frequencies (`mrope_section`). `get_rope_index` gives image tokens their grid positions and the text after an image
the position following the image's largest; `rope_deltas` (kept on the model, as HF) carries the offset into
decoding, where generate adds it to each new token's text position (generation/runner.py `position_offset`).

Checkpoint names: modules are transformers 5's (`model.visual.*`, `model.language_model.*`, `lm_head`); the
published names (`visual.*`, `model.*`, `lm_head`) that HF also writes on save are read as well, and
save_pretrained writes them, as transformers does.
"""
import itertools

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...layers import Linear, replace_rows
from ...loss_utils import causal_lm_loss
from ...modeling_outputs import CausalLMOutputWithPast
from ...modeling_rope_utils import compute_inv_freq
from ...modeling_utils import PreTrainedModel
from ..llama.modeling_llama import LlamaModel
from .vision_qwen2_vl import VisionTransformer


_MM_INPUTS = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw", "second_per_grid_ts",
              "mm_token_type_ids")


def _host(x):
    """A MindSpore / numpy / list value as numpy (None passes)."""
    if x is None:
        return None
    return x.asnumpy() if isinstance(x, ms.Tensor) else np.asarray(x)


# ---------------------------------------------------------------------------------------------- M-RoPE
class Qwen2VLRotaryEmbedding(nn.Cell):
    """cos/sin [B, S, head_dim] for positions [3, B, S] (2D [B, S] positions serve all three axes): frequency i
    takes its angle from axis (section of i) % 3 -- sections `mrope_section`, then the halves repeated (HF)."""

    def __init__(self, config):
        super().__init__()
        inv_freq, self.attention_scaling = compute_inv_freq(config)
        self.inv_freq = ms.Tensor(inv_freq)
        sections = config.rope_parameters.get("mrope_section", [16, 24, 24])
        axis = np.concatenate([np.full(n, i % 3) for i, n in enumerate(sections)])
        if len(axis) != len(inv_freq):
            raise ValueError(f"mrope_section {sections} sums to {len(axis)}, but head_dim / 2 is {len(inv_freq)}")
        # one-hot [3, 1, 1, D/2]: summing the three axes' angles times it picks each frequency's axis exactly
        self.select = ms.Tensor((axis[None, :] == np.arange(3)[:, None]).astype(np.float32).reshape(3, 1, 1, -1))

    def construct(self, x, position_ids):
        if position_ids.ndim == 2:
            position_ids = position_ids.expand_dims(0)                               # [1, B, S]: every axis
        freqs = position_ids.astype(ms.float32).expand_dims(-1) * self.inv_freq       # [3 or 1, B, S, D/2]
        freqs = (freqs * self.select).sum(0) if freqs.shape[0] == 3 else freqs[0]  # [B, S, D/2]
        emb = ops.cat((freqs, freqs), -1)
        cos = ops.cos(emb) * self.attention_scaling
        sin = ops.sin(emb) * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


def vision_positions(start, grid_thw, merge, time_interval=1.0):
    """[3, t * h/m * w/m] positions of one image or video's tokens (HF's get_vision_position_ids)."""
    t, h, w = int(grid_thw[0]), int(grid_thw[1]) // merge, int(grid_thw[2]) // merge
    temporal = (np.arange(t) * time_interval).astype(np.int64)
    tt, hh, ww = np.meshgrid(temporal, np.arange(h) + start, np.arange(w) + start, indexing="ij")
    out = np.stack([tt, hh, ww]).reshape(3, -1)
    out[0] += start
    return out


def get_rope_index(config, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                   attention_mask=None, second_per_grid_ts=None):
    """HF's get_rope_index on numpy: (position_ids [3, B, S] int64, rope_deltas [B, 1]). Text runs count up by
    one; an image (type 1) or video (type 2) run takes its grid's positions from the current one, and the next
    text starts after the largest of them. Padding (attention_mask 0) gets position 0. Qwen2.5-VL spaces video
    frames by tokens_per_second * second_per_grid_ts."""
    merge = config.vision_config.spatial_merge_size
    tokens_per_second = getattr(config.vision_config, "tokens_per_second", None)
    input_ids = np.asarray(input_ids)
    position_ids = np.zeros((3,) + input_ids.shape, np.int64)
    grids = {1: iter(np.asarray(image_grid_thw).reshape(-1, 3)) if image_grid_thw is not None else None,
             2: iter(np.asarray(video_grid_thw).reshape(-1, 3)) if video_grid_thw is not None else None}
    seconds = iter(np.asarray(second_per_grid_ts).reshape(-1).tolist()) if second_per_grid_ts is not None \
        else itertools.repeat(1)
    deltas = []
    for row in range(input_ids.shape[0]):
        keep = np.ones(input_ids.shape[1], bool) if attention_mask is None else np.asarray(attention_mask[row]) != 0
        types = np.asarray(mm_token_type_ids[row])[keep]
        current, pieces = 0, []
        for kind, group in itertools.groupby(types.tolist()):
            length = len(list(group))
            if kind == 0:
                pieces.append(np.broadcast_to(np.arange(length) + current, (3, length)))
                current += length
            else:
                grid = next(grids[kind])
                interval = 1
                if kind == 2 and tokens_per_second is not None:  # Qwen2.5-VL
                    interval = tokens_per_second * next(seconds)
                pieces.append(vision_positions(current, grid, merge, interval))
                current += max(int(grid[1]), int(grid[2])) // merge
        positions = np.concatenate(pieces, 1) if pieces else np.zeros((3, 0), np.int64)
        position_ids[:, row, keep] = positions
        deltas.append((positions.max() + 1 if positions.size else 0) - int(keep.sum()))
    return position_ids, np.asarray(deltas, np.int64).reshape(-1, 1)


# ---------------------------------------------------------------------------------------------- models
class Qwen2VLPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["LlamaDecoderLayer", "VisionBlock"]
    _input_embed_layer = "embed_tokens"

    # checkpoint key prefixes: the published layout (also what HF writes) -> transformers 5's module paths
    _published = (("visual.", "model.visual."), ("model.", "model.language_model."))

    def checkpoint_key_to_name(self, key):
        if not key.startswith(("model.visual.", "model.language_model.")):
            for old, new in self._published:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
        name = super().checkpoint_key_to_name(key)
        if name is not None and isinstance(self, Qwen2VLTextModel) and name.startswith("language_model."):
            return name[len("language_model."):]
        return name

    @classmethod
    def checkpoint_key_of(cls, name):
        """Our parameter name (with-head form) -> the published key."""
        for old, new in cls._published:
            if name.startswith(new):
                return old + name[len(new):]
        return name

    def get_input_embeddings(self):
        return _text_model(self).embed_tokens

    def set_input_embeddings(self, value):
        _text_model(self).embed_tokens = value

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """Writes the published names, as transformers 5 does (a base model under the with-head prefix)."""
        params = state_dict if state_dict is not None else dict(self.parameters_and_names())
        prefix = "" if isinstance(self, Qwen2VLForConditionalGeneration) else "model."
        if isinstance(self, Qwen2VLTextModel):
            prefix = "model.language_model."
        out = {type(self).checkpoint_key_of(prefix + name): p for name, p in params.items()}
        return super().save_pretrained(save_directory, *args, state_dict=out, **kwargs)


def _text_model(model):
    if isinstance(model, Qwen2VLTextModel):
        return model
    base = model.model if isinstance(model, Qwen2VLForConditionalGeneration) else model
    return base.language_model


class Qwen2VLTextModel(LlamaModel):
    """LLaMA's decoder with Qwen2's q/k/v biases (the family's DecoderVariant) and M-RoPE tables: position_ids may be
    [3, B, S] (or [B, S], every axis the same). Its config is the text config (model_type qwen2_vl_text)."""

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config, dtype)
        if self.rotary_per_type:
            raise NotImplementedError("rope_parameters per layer type with M-RoPE")
        self.rotary_emb = Qwen2VLRotaryEmbedding(config)

    checkpoint_key_to_name = Qwen2VLPreTrainedModel.checkpoint_key_to_name
    _published = Qwen2VLPreTrainedModel._published


class Qwen2VLModel(Qwen2VLPreTrainedModel):
    """The vision tower (`visual`) and the text model (`language_model`); image and video features replace the
    image / video pad tokens' embeddings, and M-RoPE positions come from `get_rope_index`."""

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.visual = VisionTransformer(config.vision_config, dtype)
        self.language_model = Qwen2VLTextModel(config.text_config, dtype)
        self.rope_deltas = None  # [B, 1] numpy after a prefill with images or videos (HF keeps it here too)

    # the runner's and the compiled prefill's view of the text decoder
    def causal_masks(self, *args, **kwargs):
        return self.language_model.causal_masks(*args, **kwargs)

    def compiles_layers(self):
        return False  # the prefill runs eagerly: compiled_layers marks the base model, not its language_model

    def get_rope_index(self, input_ids, mm_token_type_ids=None, image_grid_thw=None, video_grid_thw=None,
                       attention_mask=None, second_per_grid_ts=None, **kwargs):
        ids = _host(input_ids)
        types = _host(mm_token_type_ids)
        if types is None:
            types = self.mm_token_types(ids)
        positions, deltas = get_rope_index(self.config, ids, types, _host(image_grid_thw), _host(video_grid_thw),
                                           _host(attention_mask), _host(second_per_grid_ts))
        return ms.Tensor(positions), ms.Tensor(deltas)

    def mm_token_types(self, input_ids):
        """The processor's mm_token_type_ids from the ids: 1 at image pad tokens, 2 at video pad tokens."""
        return np.where(input_ids == self.config.image_token_id, 1,
                        np.where(input_ids == self.config.video_token_id, 2, 0))

    def _features(self, pixel_values, grid_thw):
        """HF's get_image_features: the tower's output with `pooler_output` split per image (or video)."""
        grid = _host(grid_thw).reshape(-1, 3)
        out = self.visual(pixel_values, grid)
        sizes = (grid.prod(-1) // self.visual.spatial_merge_size ** 2).tolist()
        out.pooler_output = tuple(ops.split(out.pooler_output, sizes, 0)) if len(sizes) > 1 else (out.pooler_output,)
        return out

    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        return self._features(pixel_values, image_grid_thw)

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        return self._features(pixel_values_videos, video_grid_thw)

    @staticmethod
    def _scatter(inputs_embeds, ids, token_id, features, what):
        """inputs_embeds [B, S, E] with the rows of `token_id` replaced, in order, by features [N, E] (HF's
        masked_scatter)."""
        slots = np.flatnonzero(ids.reshape(-1) == token_id)
        if len(slots) != features.shape[0]:
            raise ValueError(f"{what.capitalize()} features and {what} tokens do not match, tokens: {len(slots)}, "
                             f"features: {features.shape[0]}")
        return replace_rows(inputs_embeds, slots, features)

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, use_cache=None, pixel_values=None, pixel_values_videos=None,
                  image_grid_thw=None, video_grid_thw=None, mm_token_type_ids=None, second_per_grid_ts=None,
                  output_hidden_states=None, output_attentions=None, return_dict=None, cache=None, **kwargs):
        past_key_values = past_key_values if past_key_values is not None else cache
        has_vision = pixel_values is not None or pixel_values_videos is not None
        if inputs_embeds is None:
            inputs_embeds = self.language_model.embed_tokens(input_ids)
        elif has_vision and input_ids is None:
            raise NotImplementedError("pixel_values with inputs_embeds and no input_ids (the placeholders are "
                                      "found by id)")
        ids = _host(input_ids) if has_vision or (input_ids is not None and image_grid_thw is not None) else None
        if pixel_values is not None:
            features = self.visual(pixel_values, _host(image_grid_thw)).pooler_output
            inputs_embeds = self._scatter(inputs_embeds, ids, self.config.image_token_id, features, "image")
        if pixel_values_videos is not None:
            features = self.visual(pixel_values_videos, _host(video_grid_thw)).pooler_output
            inputs_embeds = self._scatter(inputs_embeds, ids, self.config.video_token_id, features, "video")
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        grids = image_grid_thw is not None or video_grid_thw is not None
        if input_ids is not None and grids and past_len == 0 and (position_ids is None or position_ids.ndim == 2):
            # M-RoPE positions from the prompt (generate's prefill passes 2D text positions: see the module doc)
            ids = _host(input_ids) if ids is None else ids
            types = _host(mm_token_type_ids)
            if types is None or types.shape != ids.shape:  # generate pads the prompt on the left: derive them
                types = self.mm_token_types(ids)
            positions, self.rope_deltas = get_rope_index(
                self.config, ids, types, _host(image_grid_thw), _host(video_grid_thw), _host(attention_mask),
                _host(second_per_grid_ts))
            position_ids = ms.Tensor(positions)
        elif position_ids is None and self.rope_deltas is not None and past_len > 0:
            # a decoding step called by hand (as HF): text positions after the cache, plus the prompt's offset
            seq = inputs_embeds.shape[1]
            if attention_mask is not None:
                mask = _host(attention_mask)
                text = np.where(mask == 0, 0, np.cumsum(mask, -1) - 1)[:, -seq:]
            else:
                text = np.arange(past_len, past_len + seq)[None, :]
            deltas = np.repeat(self.rope_deltas, inputs_embeds.shape[0] // self.rope_deltas.shape[0], 0)
            position_ids = ms.Tensor((text + deltas).astype(np.int64))
        elif past_len == 0 and not grids:
            self.rope_deltas = None  # a text-only prompt: decoding positions are the text ones
        if position_ids is not None and position_ids.ndim == 3 and position_ids.shape[0] == 4:
            position_ids = position_ids[1:]  # HF's [text; t; h; w] form: the text row only names packing
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
                                   output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                   return_dict=return_dict, **kwargs)


class Qwen2VLForConditionalGeneration(Qwen2VLPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # tensor parallel (tp_plan="auto"), as transformers' plans: the language model's LLaMA layers declare theirs
    # (the text config's base_model_tp_plan), the head is HF's; the vision tower declares none (replicated)
    _tp_plan = {"lm_head": "colwise_gather_output"}
    # the prompt's images and videos reach the prefill forward only (generation/utils.py)
    _prefill_inputs = _MM_INPUTS
    # as transformers' class: the Trainer does not pass num_items_in_batch; the loss is each micro-batch's mean
    accepts_loss_kwargs = False

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.model = Qwen2VLModel(config, dtype)
        text = config.text_config
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = Linear(text.hidden_size, text.vocab_size, False, dtype, std=text.initializer_range)

    def can_generate(self):
        return True

    def get_output_embeddings(self):
        return self.model.language_model.embed_tokens if self.tied else self.lm_head

    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        return self.model.get_image_features(pixel_values, image_grid_thw)

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        return self.model.get_video_features(pixel_values_videos, video_grid_thw)

    def _skip_key(self, name):
        if name == "lm_head.weight" and self.tied:
            return True
        return super()._skip_key(name)

    def lm_logits(self, hidden_states):
        head = self.get_output_embeddings()
        if hasattr(head, "parallel_logits"):  # tensor parallel (parallel/plan.py): each rank holds a vocab slice
            return head.parallel_logits(hidden_states)
        weight = head.weight
        shape = hidden_states.shape
        logits = fused.linear(hidden_states.reshape(-1, shape[-1]), weight)
        return logits.reshape(shape[:-1] + (weight.shape[0],))

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, pixel_values=None, pixel_values_videos=None,
                  image_grid_thw=None, video_grid_thw=None, mm_token_type_ids=None, second_per_grid_ts=None,
                  output_hidden_states=None, output_attentions=None, return_dict=None, logits_to_keep=0,
                  num_items_in_batch=None, cache=None, **kwargs):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values if past_key_values is not None else cache,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, pixel_values=pixel_values,
                             pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw,
                             video_grid_thw=video_grid_thw, mm_token_type_ids=mm_token_type_ids,
                             second_per_grid_ts=second_per_grid_ts, output_hidden_states=output_hidden_states,
                             output_attentions=output_attentions, **kwargs)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and 0 < logits_to_keep < hidden_states.shape[1]:
            # narrow, not a slice: see LlamaForCausalLM (tuple indexing under a trace reads os.environ)
            hidden_states = hidden_states.narrow(1, hidden_states.shape[1] - logits_to_keep, logits_to_keep)
        logits = self.lm_logits(hidden_states)
        loss = causal_lm_loss(logits, labels, num_items_in_batch) if labels is not None else None
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                     hidden_states=outputs.hidden_states)
        return out.to_tuple() if return_dict is False else out
