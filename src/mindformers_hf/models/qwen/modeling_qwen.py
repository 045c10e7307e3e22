"""Qwen v1 (`QWenLMHeadModel`: Qwen-1.8B/7B/14B/72B and -Chat) on the LLaMA classes, loading the repos'
checkpoints as they are: no code from the repo runs.

Qwen v1 is Qwen2 under GPT-2-like names: `c_attn` fuses q/k/v with a bias (rows q, k, v: our `qkv_proj`,
the variant declared in models/qwen/__init__.py), `attn.c_proj` is o_proj, and the MLP computes
c_proj(w1(x) * silu(w2(x))): w2 is the gate, w1 the up projection, each `intermediate_size // 2` wide.
`use_dynamic_ntk` and `use_logn_attn` change nothing while the sequence fits in `seq_length`; beyond
it they rescale rotary and queries, which is not implemented here: such inputs raise.
"""
import mindspore as ms

from ...weights import CheckpointFormatMixin, WeightRule, WeightTable
from ..llama.modeling_llama import LlamaForCausalLM, LlamaMLP, LlamaModel, LlamaPreTrainedModel
from .chat_qwen import QWenChatMixin

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


class QWenModel(CheckpointFormatMixin, LlamaModel):
    weight_table = QWEN_WEIGHTS

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, **kwargs):
        _check_length(self.config, input_ids, inputs_embeds, past_key_values if past_key_values is not None
                      else kwargs.get("cache"))
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
    _base_model_class = QWenModel  # (its compiles_layers)
    # A causal LM: the Trainer counts num_items_in_batch over the shifted labels (transformers would find no loss
    # type in the remote class's name and count every label; docs/differences.md)
    loss_type = "ForCausalLM"

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, **kwargs):
        _check_length(self.config, input_ids, inputs_embeds, past_key_values if past_key_values is not None
                      else kwargs.get("cache"))
        return super().construct(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, **kwargs)
