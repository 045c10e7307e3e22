"""Baichuan and Baichuan2, 7B and 13B (`BaichuanForCausalLM`, `BaiChuanForCausalLM`) on the LLaMA classes,
loading the repos' checkpoints as they are: no code from the repo runs.

Against LLaMA: q/k/v are one `W_pack` tensor (rows q, k, v: our fused `qkv_proj`, renamed by the table
below); Baichuan2's head is a "NormHead" whose rows are L2-normalised when used (`config.norm_head`); the
13B models replace rotary embeddings with ALiBi, a per-head linear bias on the attention scores
(`config.position_embedding == "alibi"`); and Baichuan2's loss may add a z-loss, `z_loss_weight` times
the mean squared max logit. configuration_baichuan.py says how norm_head and position_embedding are
decided for the released checkpoints.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import ops

from ... import ops as fused
from ...weights import CheckpointFormatMixin, WeightRule, WeightTable
from ..llama.modeling_llama import LlamaAttention, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from .chat_baichuan import BaichuanChatMixin

BAICHUAN_WEIGHTS = WeightTable(
    WeightRule("model.layers.{i}.self_attn.W_pack.weight", "model.layers.{i}.self_attn.qkv_proj.weight"),
)


def alibi_slopes(num_heads):
    """ALiBi's head slopes as the Baichuan 13B code computes them: for the largest power of two n <= heads,
    2^(-8/n * k) for k = 1..n; the remaining heads take the odd-k slopes of 2n heads."""
    n = 2 ** math.floor(math.log2(num_heads))
    slopes = [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]
    slopes += [2.0 ** (-8.0 * k / (2 * n)) for k in range(1, 2 * (num_heads - n), 2)]
    return np.asarray(slopes, np.float32)


class BaichuanAttention(LlamaAttention):
    """LLaMA attention (fused W_pack), with ALiBi instead of rotary when config.position_embedding is "alibi"."""

    def __init__(self, config, layer_idx, dtype=ms.float32):
        super().__init__(config, layer_idx, dtype)
        self.alibi = config.position_embedding == "alibi"
        if self.alibi:  # every head's slope; a tensor-parallel rank uses those of the heads it holds
            heads = config.num_attention_heads
            self.all_slopes = ms.Tensor(alibi_slopes(heads).reshape(1, heads, 1, 1))

    @property
    def slopes(self):
        """[1, local heads, 1, 1]: the slopes of this module's heads, from the first head its o_proj holds
        (`col_range` of a row-parallel o_proj: a tensor-parallel rank's share)."""
        first = getattr(self.o_proj, "col_range", (0,))[0] // self.head_dim
        return self.all_slopes[:, first:first + self.num_heads]

    def construct(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None):
        if not self.alibi:
            return super().construct(hidden_states, cos, sin, attention_mask, past_key_values)
        bsz, q_len, _ = hidden_states.shape
        heads, dim = self.num_heads, self.head_dim
        q, k, v = self.project_qkv(hidden_states)                                    # [B, H, S or T, D]
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        kv_len = k.shape[2]
        # slope * (key position - last position), Baichuan's inference form; softmax ignores the per-row
        # offset, so this equals -slope * (query position - key position) on every allowed key
        distance = (ops.arange(kv_len, dtype=ms.int32) - (kv_len - 1)).astype(ms.float32)
        bias = self.slopes * distance.reshape(1, 1, 1, kv_len)                          # [1, H, 1, T]
        mask = bias if attention_mask is None else attention_mask + bias               # [B or 1, H, S or 1, T]
        # a per-head mask: fold heads into the batch so the attention op sees one head with its own mask
        mask = ops.broadcast_to(mask, (bsz, heads, q_len, kv_len)).reshape(bsz * heads, 1, q_len, kv_len)
        out = fused.causal_attention(q.reshape(bsz * heads, 1, q_len, dim), k.reshape(bsz * heads, 1, kv_len, dim),
                                     v.reshape(bsz * heads, 1, kv_len, dim), mask, self.scaling,
                                     attn_implementation=self.attn_implementation)       # [B * H, 1, S, D]
        out = out.reshape(bsz, heads, q_len, dim).swapaxes(1, 2).reshape(bsz, q_len, heads * dim)
        return self.o_proj(out)


class BaichuanPreTrainedModel(CheckpointFormatMixin, LlamaPreTrainedModel):
    weight_table = BAICHUAN_WEIGHTS


class BaichuanModel(CheckpointFormatMixin, LlamaModel):
    weight_table = BAICHUAN_WEIGHTS


def _as_dtype(tensor, dtype):
    """`astype` only when the dtype differs: a same-dtype astype of a constant inside a decode step's trace left a
    released graph node that crashed the next trace (a beam-search step traced after a greedy one)."""
    return tensor if tensor.dtype == dtype else tensor.astype(dtype)


class BaichuanForCausalLM(BaichuanChatMixin, CheckpointFormatMixin, LlamaForCausalLM):
    weight_table = BAICHUAN_WEIGHTS

    def __init__(self, config, dtype=ms.float32):
        super().__init__(config, dtype)
        self._inverse_head_norms = None  # NormHead in eval mode: computed once, as Baichuan2 normalises once

    # The eval-mode norms are computed when the weights or the mode change, never inside a forward (which may be a
    # compiled decode step's trace: a tensor made there and cached is a node of that trace's graph).
    def set_train(self, mode=True):
        result = super().set_train(mode)
        self._inverse_head_norms = None if mode else self._eval_head_norms()
        return result

    def load_weights(self, source):
        result = super().load_weights(source)
        self._inverse_head_norms = None if self.training else self._eval_head_norms()
        return result

    def _eval_head_norms(self):
        if not getattr(self.config, "norm_head", False) or getattr(self, "lm_head", None) is None:
            return None
        return ops.stop_gradient(self._head_norms())

    def _head_norms(self):
        weight = self.lm_head.weight.astype(ms.float32)
        return 1.0 / ops.clamp(ops.sqrt((weight * weight).sum(-1)), min=1e-12)    # [V]

    def lm_logits(self, hidden_states):
        """NormHead: logits against unit-norm head rows, i.e. each row's logit divided by that row's norm
        (torch's F.normalize, eps 1e-12). Training recomputes the norms every step, so gradients flow
        through the normalisation as in Baichuan2's training mode. A tensor-parallel head holds a vocab slice
        of lm_head: the norms of its rows scale its logits before they are gathered."""
        if not self.config.norm_head:
            return super().lm_logits(hidden_states)
        inverse = self._inverse_head_norms
        if inverse is None or self.training or inverse.shape[0] != self.lm_head.weight.shape[0]:  # or a TP slice
            inverse = self._head_norms()                                       # [V or this rank's rows]
        if hasattr(self.lm_head, "parallel_logits"):
            return self.lm_head.parallel_logits(hidden_states, row_scale=_as_dtype(inverse, hidden_states.dtype))
        logits = super().lm_logits(hidden_states)
        return logits * _as_dtype(inverse, logits.dtype)

    def construct(self, *args, labels=None, return_dict=None, **kwargs):
        out = super().construct(*args, labels=labels, return_dict=True, **kwargs)
        weight = float(getattr(self.config, "z_loss_weight", 0) or 0)
        if labels is not None and weight:
            # Baichuan2's z-loss: over every shifted position, padded or not, as its modeling file computes it
            shifted = out.logits[:, :-1, :].astype(ms.float32)
            out.loss = out.loss + weight * (shifted.max(axis=-1) ** 2).mean()
        return out.to_tuple() if return_dict is False else out
