"""One compiled graph serving every decoder layer of a plain LLaMA stack: generate's prefill and training.

In PyNative each MindSpore op costs ~0.1 ms of dispatch on this CPU, and a decoder layer is ~25 ops; under
`ms.jit` a layer is one graph launch. The graph takes the layer's weights as inputs, so the 30 layers of
SmolLM2 share one compilation per input shape (~0.5 s forward, ~1.5 s with the backward graph) instead of
one per layer -- passing the Parameters themselves would compile again for each layer, and `p.value()`
copies. A prefill passes `ms.Tensor(p)` (the same memory, no autograd); a train step passes reshape views,
which carry gradients back to the Parameters (but made a 512-token prefill ~50% slower than plain tensors).
The generate runner pads prompts to a few lengths (generation/runner.py `prefill_length`) and the Trainer
stops compiling after a few batch shapes, so compilations stay few.

It covers the layers LlamaDecoderLayer builds with no family switch (LLaMA, Mistral, SmolLM, Yi, Qwen2's
biased q/k/v and the like); `layer_spec` returns None for any other layer, which then runs eagerly. The
graph is the eager layer's math op for op (same fused ops); for a prefill it also returns this layer's
rotated keys and the values for the KV cache.
"""
import functools
from dataclasses import dataclass

import mindspore as ms
from mindspore import ops

from ... import ops as fused
from ...layers import Linear


@dataclass(frozen=True)
class LayerSpec:
    num_heads: int
    num_kv_heads: int
    head_dim: int
    eps: float
    scaling: float
    attn_implementation: str
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool


def layer_spec(layer):
    """The static description of a plain LLaMA decoder layer, or None if the layer is anything else."""
    from .modeling_llama import LlamaAttention, LlamaMLP  # (that file imports this one)

    attn, mlp = layer.self_attn, layer.mlp
    if type(attn) is not LlamaAttention or type(mlp) is not LlamaMLP or layer.sandwich_norm:
        return None
    if attn.fused_qkv or attn.qk_norm or attn.interleaved_rotary or mlp.fused_gate_up:
        return None
    projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    if any(type(p) is not Linear for p in projections):  # LoRA, tensor-parallel and other wrappers stay eager
        return None
    if layer.input_layernorm.variance_epsilon != layer.post_attention_layernorm.variance_epsilon:
        return None
    return LayerSpec(attn.num_heads, attn.num_key_value_heads, attn.head_dim,
                     float(layer.input_layernorm.variance_epsilon), float(attn.scaling), attn.attn_implementation,
                     attn.q_proj.bias is not None, attn.o_proj.bias is not None, mlp.gate_proj.bias is not None)


def layer_weights(layer, spec, differentiable):
    """The graph's weight inputs, in the order `layer_graph` reads them."""
    attn, mlp = layer.self_attn, layer.mlp
    weights = [layer.input_layernorm.weight, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]
    if spec.qkv_bias:
        weights += [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
    weights.append(attn.o_proj.weight)
    if spec.o_bias:
        weights.append(attn.o_proj.bias)
    weights += [layer.post_attention_layernorm.weight, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
    if spec.mlp_bias:
        weights += [mlp.gate_proj.bias, mlp.up_proj.bias, mlp.down_proj.bias]
    if differentiable:
        return tuple(w.reshape(w.shape) for w in weights)  # see the module docstring
    return tuple(ms.Tensor(w) for w in weights)


@functools.lru_cache(maxsize=None)
def layer_graph(spec, with_cache, last_only=False):
    """hidden [B, S, hidden], cos/sin, mask, *weights -> hidden, and with_cache also keys and values
    [B, KV, S, D] for the cache. last_only (the last layer of a prefill, whose caller reads only the last
    position's logits): keys and values for every position, the rest for the last one -> hidden [B, 1, hidden]
    (a layer's attention output projection and MLP are ~90% of its work)."""
    linear = ops.MatMul(transpose_b=True)  # x2d [N, in] @ weight [out, in]^T, as layers.Linear
    heads, kv_heads, head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
    eps, scaling, attn_implementation = spec.eps, spec.scaling, spec.attn_implementation
    qkv_bias, o_bias, mlp_bias = spec.qkv_bias, spec.o_bias, spec.mlp_bias

    def decoder_layer(hidden, cos, sin, mask, *w):
        bsz, q_len, width = hidden.shape
        x = fused.rms_norm(hidden, w[0], eps).reshape(bsz * q_len, width)
        q, k, v = linear(x, w[1]), linear(x, w[2]), linear(x, w[3])
        i = 4
        if qkv_bias:
            q, k, v = q + w[4], k + w[5], v + w[6]
            i = 7
        q = q.reshape(bsz, q_len, heads, head_dim).swapaxes(1, 2)
        k = k.reshape(bsz, q_len, kv_heads, head_dim).swapaxes(1, 2)
        v = v.reshape(bsz, q_len, kv_heads, head_dim).swapaxes(1, 2)
        q, k = fused.apply_rotary_pos_emb(q, k, cos, sin)
        if last_only:
            q, mask, hidden, q_len = q[:, :, -1:, :], mask[:, :, -1:, :], hidden[:, -1:, :], 1
        out = fused.causal_attention(q, k, v, mask, scaling, attn_implementation=attn_implementation)
        out = linear(out.swapaxes(1, 2).reshape(bsz * q_len, heads * head_dim), w[i])
        if o_bias:
            out = out + w[i + 1]
            i += 1
        hidden = hidden + out.reshape(bsz, q_len, width)
        x = fused.rms_norm(hidden, w[i + 1], eps).reshape(bsz * q_len, width)
        gate, up = linear(x, w[i + 2]), linear(x, w[i + 3])
        if mlp_bias:
            gate, up = gate + w[i + 5], up + w[i + 6]
        down = linear(fused.silu_mul(gate, up), w[i + 4])
        if mlp_bias:
            down = down + w[i + 7]
        hidden = hidden + down.reshape(bsz, q_len, width)
        if with_cache:
            return hidden, k, v
        return hidden

    return ms.jit(decoder_layer)
