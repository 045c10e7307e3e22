"""Qwen v1 (`QWenLMHeadModel`: Qwen-1.8B/7B/14B/72B and -Chat) on the LLaMA classes, loading the repos'
checkpoints as they are: no code from the repo runs.

Qwen v1 is Qwen2 under GPT-2-like names: `c_attn` fuses q/k/v with a bias (rows q, k, v: our `qkv_proj`,
the variant declared in models/qwen/__init__.py), `attn.c_proj` is o_proj, and the MLP computes
c_proj(w1(x) * silu(w2(x))): w2 is the gate, w1 the up projection, each `intermediate_size // 2` wide.
`use_dynamic_ntk` and `use_logn_attn` change nothing while the sequence fits in `seq_length`; beyond
it they rescale rotary and queries, which is not implemented here: such inputs raise.

Qwen-VL (v1: Qwen/Qwen-VL, Qwen/Qwen-VL-Chat) is the same class with a `visual` section in config.json: the
vision tower (vision_qwen_vl.py, `transformer.visual.*`) turns each image into n_queries (256) features that
replace the embeddings strictly between an <img> token (config.visual["image_start_id"]) and its </img> (the
next id), as the published modeling_qwen.py does in the prompt's forward. The published model reads the image
paths out of those token ids and opens the files itself; ours takes the images as `pixel_values`
[n_images, 3, image_size, image_size] (processing.QWenVLImageProcessor), the i-th image for the i-th <img> span
in row-major order (docs/differences.md).
"""
import numpy as np
import mindspore as ms

from ...layers import replace_rows
from ...weights import CheckpointFormatMixin, WeightRule, WeightTable
from ..llama.modeling_llama import LlamaForCausalLM, LlamaMLP, LlamaModel, LlamaPreTrainedModel
from .chat_qwen import QWenChatMixin
from .vision_qwen_vl import QWenVisionTransformer

_LAYER, _OURS = "transformer.h.{i}.", "model.layers.{i}."
QWEN_WEIGHTS = WeightTable(
    WeightRule("transformer.wte.weight", "model.embed_tokens.weight"),
    WeightRule(_LAYER + "ln_1.weight", _OURS + "input_layernorm.weight"),
    WeightRule(_LAYER + "attn.c_attn.{kind}", _OURS + "self_attn.qkv_proj.{kind}"),
    WeightRule(_LAYER + "attn.c_proj.{kind}", _OURS + "self_attn.o_proj.{kind}"),
    WeightRule(_LAYER + "ln_2.weight", _OURS + "post_attention_layernorm.weight"),
    WeightRule(_LAYER + "mlp.w2.{kind}", _OURS + "mlp.gate_proj.{kind}"),
    WeightRule(_LAYER + "mlp.w1.{kind}", _OURS + "mlp.up_proj.{kind}"),
    WeightRule(_LAYER + "mlp.c_proj.{kind}", _OURS + "mlp.down_proj.{kind}"),
    WeightRule("transformer.ln_f.weight", "model.norm.weight"),
    WeightRule("transformer.visual.{rest}", "model.visual.{rest}"),  # Qwen-VL's vision tower, names unchanged
)


def qwen_mlp(config, layer_idx, dtype=ms.float32):
    """A layer's MLP: LLaMA's, each of w1 / w2 half of Qwen's `intermediate_size` wide."""
    return LlamaMLP(config, dtype, config.intermediate_size // 2)


def _check_length(config, input_ids, inputs_embeds, past_key_values):
    """Qwen's dynamic NTK and logn scaling start past seq_length; we do not implement them."""
    if not (config.use_dynamic_ntk or config.use_logn_attn):
        return
    tokens = (input_ids if input_ids is not None else inputs_embeds).shape[1]
    total = tokens + (past_key_values.get_seq_length() if past_key_values is not None else 0)
    if total > config.seq_length:
        raise NotImplementedError(
            f"Qwen's use_dynamic_ntk / use_logn_attn beyond seq_length={config.seq_length} are not supported "
            f"({total} positions); set both to False in the config to run plain rotary at any length")


class QWenPreTrainedModel(CheckpointFormatMixin, LlamaPreTrainedModel):
    weight_table = QWEN_WEIGHTS


def image_spans(input_ids, start_id):
    """[(row, first, end)] of each <img> ... </img> span in row-major order: the image's features go to positions
    first..end-1 (after <img>, up to and without </img>; </img> is start_id + 1), as modeling_qwen.py's img_pos."""
    ids = np.asarray(input_ids)
    starts, ends = np.argwhere(ids == start_id), np.argwhere(ids == start_id + 1)
    if len(starts) != len(ends) or (len(starts) and (starts[:, 0] != ends[:, 0]).any()):
        raise ValueError(f"Qwen-VL: the <img> ({start_id}) and </img> ({start_id + 1}) tokens do not pair up row by "
                         "row")
    return [(int(r), int(a) + 1, int(b)) for (r, a), (_, b) in zip(starts, ends)]


class QWenModel(CheckpointFormatMixin, LlamaModel):
    weight_table = QWEN_WEIGHTS

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config, dtype)
        visual = getattr(config, "visual", None)
        self.visual = QWenVisionTransformer(visual, dtype) if visual else None

    def get_image_features(self, pixel_values):
        """[n_images, 3, S, S] -> [n_images, n_queries, hidden_size] (the published `visual(images)`)."""
        if self.visual is None:
            raise ValueError("pixel_values given, but this Qwen config has no `visual` section (not Qwen-VL)")
        return self.visual(pixel_values)

    def _with_images(self, input_ids, inputs_embeds, pixel_values, past_len):
        """inputs_embeds with each <img> span's positions replaced by its image's features."""
        ids = np.asarray(input_ids.asnumpy() if isinstance(input_ids, ms.Tensor) else input_ids)
        spans = image_spans(ids, self.config.visual.get("image_start_id", 151857)) if self.visual is not None else []
        if pixel_values is None:
            if spans and past_len == 0:
                raise NotImplementedError(
                    "Qwen-VL: the prompt has <img>...</img> spans but no pixel_values; the published model opens the "
                    "image paths written between those tokens, ours takes the images as pixel_values "
                    "(QWenVLImageProcessor)")
            return inputs_embeds
        features = self.get_image_features(pixel_values)                            # [N, Q, E]
        if len(spans) != features.shape[0]:
            raise ValueError(f"Qwen-VL: {features.shape[0]} images in pixel_values but {len(spans)} <img> spans in "
                             "input_ids")
        seq = inputs_embeds.shape[1]
        for row, first, end in spans:
            if end - first != features.shape[1]:
                raise ValueError(f"Qwen-VL: an <img> span holds {end - first} tokens, the vision tower gives "
                                 f"{features.shape[1]} features per image")
        slots = np.concatenate([np.arange(row * seq + first, row * seq + end) for row, first, end in spans])
        return replace_rows(inputs_embeds, slots, features)

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, pixel_values=None, **kwargs):
        cache = past_key_values if past_key_values is not None else kwargs.get("cache")
        _check_length(self.config, input_ids, inputs_embeds, cache)
        if self.visual is not None and input_ids is not None and inputs_embeds is None:
            past_len = cache.get_seq_length() if cache is not None else 0
            inputs_embeds = self._with_images(input_ids, self.embed_tokens(input_ids), pixel_values, past_len)
            input_ids = None
        elif pixel_values is not None:
            raise NotImplementedError("Qwen-VL: pixel_values need input_ids (the <img> spans are found by id)"
                                      if self.visual is not None else
                                      "pixel_values given, but this Qwen config has no `visual` section")
        return super().construct(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, **kwargs)

    def compiles_layers(self):
        """Not with use_dynamic_ntk / use_logn_attn: a compiled prefill pads the prompt to a bucket length, and those
        pad columns would count toward seq_length in `_check_length` (a spurious refusal for a short prompt)."""
        if self.config.use_dynamic_ntk or self.config.use_logn_attn:
            return False
        return super().compiles_layers()


class QWenLMHeadModel(QWenChatMixin, CheckpointFormatMixin, LlamaForCausalLM):
    """`chat` / `chat_stream` are the Chat models' (chat_qwen.py)."""
    weight_table = QWEN_WEIGHTS
    _base_model_class = QWenModel  # (its compiles_layers; Qwen-VL's vision tower)
    _prefill_inputs = ("pixel_values",)  # Qwen-VL: the prompt's images reach the prefill forward only
    # A causal LM: the Trainer counts num_items_in_batch over the shifted labels (transformers would find no loss
    # type in the remote class's name and count every label; docs/differences.md)
    loss_type = "ForCausalLM"

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, **kwargs):
        _check_length(self.config, input_ids, inputs_embeds, past_key_values if past_key_values is not None
                      else kwargs.get("cache"))
        return super().construct(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, **kwargs)

    def get_image_features(self, pixel_values):
        """Qwen-VL: [n_images, 3, S, S] -> [n_images, n_queries, hidden_size]."""
        return self.model.get_image_features(pixel_values)
