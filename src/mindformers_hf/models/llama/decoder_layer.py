"""The LLaMA decoder layer as one function, run eagerly by LlamaDecoderLayer and compiled by LlamaModel.

`decoder_layer(spec, w, ...)` is the layer's math: `spec` (a `LayerSpec`) holds what is static -- head counts,
eps, the family's switches (q/k norm, fused qkv or gate/up, interleaved rotary, sandwich or post-only norms, Gemma's
(1 + weight) norms, LayerNorms, GeGLU or plain MLPs, parallel residual, NoPE layers, attention soft-capping and
sinks) -- and `w` the
layer's weights by their HF names relative to the layer:
  - eager (LlamaDecoderLayer.construct): `w` maps module paths to the modules ("self_attn.q_proj" -> the Linear),
    so LoRA, tensor-parallel and other wrapped projections apply themselves, and an attention or MLP of a family's
    own (DeepSeek's latent attention, MoE) runs as its module (`spec.attention` / `spec.mlp` None);
  - compiled (LlamaModel under `compiled_layers(model, "prefill" | "score" | "train")`): `w` maps parameter names to
    tensors ("self_attn.q_proj.weight", "self_attn.q_proj.bias") and the function runs under `ms.jit`. A sparse MoE
    block joins the graph as `moe` (spec.moe) when its `graph_spec` allows it (the moe_experts CPU kernel, not
    training, no recorded router logits).
A projection or norm is read by name (`_linear`, `_norm`): the module when `w` holds it, else its weight.

Why a dict, not a NamedTuple: the graph takes the weights as one `ms.mutable` dict input. Tensors inside a tuple
input are constants (one compilation per layer), and a NamedTuple built inside the graph is an interpreted node
that stops gradients; a dict is neither.

Why compiled: in PyNative each MindSpore op costs ~0.1 ms of dispatch on this CPU, and a decoder layer is ~25
ops; under `ms.jit` a layer is one graph launch. The graph takes the layer's weights as inputs, so all layers of
a model share one compilation per input shape instead of one per layer -- passing the Parameters themselves
would compile again for each layer, and `p.value()` copies. A prefill passes `ms.Tensor(p)` (the same memory, no
autograd); a train step passes reshape views, which carry gradients back to the Parameters (but made a
512-token prefill ~50% slower than plain tensors). The generate runner pads prompts to a few lengths
(generation/runner.py `prefill_length`) and the Trainer stops compiling after a few batch shapes, so
compilations stay few. For a prefill the graph also returns this layer's rotated keys and the values for the
KV cache, which the caller writes.
"""
import functools
from dataclasses import dataclass
from typing import Optional

import mindspore as ms
from mindspore import ops

from ... import ops as fused
from ...activations import activation
from ...ops import moe as moe_ops

@dataclass(frozen=True)
class AttentionSpec:
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    attn_implementation: Optional[str]
    fused_qkv: bool = False           # one `qkv_proj` [(H + 2*KV) * D, hidden], rows q then k then v
    qk_norm: bool = False             # RMSNorm over head_dim on q and k, before rotary
    qk_norm_eps: float = 0.0
    interleaved_rotary: bool = False  # rotary pairs are adjacent dims (0, 1), (2, 3), ...
    softcap: Optional[float] = None   # Gemma 2: scores -> tanh(scores / softcap) * softcap, before the mask
    norm_offset: bool = False         # Gemma 3: the q/k norms scale by (1 + weight)
    qk_norm_whole: bool = False       # OLMo 2: the q/k norms span the whole projection (H * D), before the head split
    rope: bool = True                 # SmolLM3: False on its NoPE layers (no rotary at all)
    o_name: str = "o_proj"            # the output projection's name (Phi: dense)
    sinks: bool = False               # gpt-oss: a learned logit per head (`self_attn.sinks`) joins the softmax


@dataclass(frozen=True)
class MLPSpec:
    intermediate_size: int
    fused_gate_up: bool = False       # one `gate_up_proj` [2 * inter, hidden], rows gate then up
    activation: str = "silu"          # HF's ACT2FN name applied to gate (Gemma: "gelu_pytorch_tanh")
    names: tuple = ("gate_proj", "up_proj", "down_proj")  # gate None: plain down(act(up(x))) (StarCoder2, Phi)


@dataclass(frozen=True)
class MoESpec:
    """A sparse MoE block (models/mixtral/modeling_mixtral.py's MixtralSparseMoeBlock) for the compiled graph: the
    router's switches (ops.moe.route_tokens), the routed experts (ops.moe_experts) and an optional shared expert."""
    top_k: int
    scoring: str
    norm_topk_prob: bool
    topk_method: str
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    correction_bias: bool
    shared: Optional[str] = None         # "shared_expert" (gated, Qwen2-MoE) or "shared_experts" (DeepSeek)
    shared_mlp: Optional[MLPSpec] = None


@dataclass(frozen=True)
class LayerSpec:
    attention: Optional[AttentionSpec]  # None: the layer's `self_attn` module runs as itself (eager only)
    mlp: Optional[MLPSpec]              # None: the layer's `mlp` module runs as itself (MoE; eager only)
    eps: float                          # the layer's RMSNorms (the compiled path; modules carry their own)
    sandwich_norm: bool = False         # RMSNorm on the attention and MLP outputs, before each residual add
    norm_names: tuple = ("input_layernorm", "post_self_attn_layernorm", "post_attention_layernorm",
                         "post_mlp_layernorm")  # before / after attention, before / after the MLP
    norm_offset: bool = False           # Gemma: the norms scale by (1 + weight)
    parallel_residual: bool = False     # Phi: hidden + attn(norm(hidden)) + mlp(norm(hidden))
    moe: Optional[MoESpec] = None       # compiled only: the sparse MoE block that `mlp` None leaves to its module


def modules(cell, prefix="", out=None):
    """{path: module} for the eager `w`: every submodule of `cell` by its HF path under `prefix` ("self_attn.q_proj").
    Read from `Cell._cells` (where MindSpore keeps a cell's children; `cells_and_names` walks the same) on every call,
    so modules swapped in later (LoRA, tensor parallel) are the ones used: ~20 us a layer, 3x less than
    `cells_and_names`."""
    out = {} if out is None else out
    for name, child in cell._cells.items():
        if child is not None:
            out[prefix + name] = child
            modules(child, prefix + name + ".", out)
    return out


def _norm(w, name, x, eps, offset=False):
    """RMSNorm `name`: its module, or its weight (scaling by 1 + weight, in float32, when `offset`: Gemma); a norm
    with a bias is a LayerNorm (StarCoder2, Phi); no name: no norm (OLMo 2's missing pre-norms)."""
    if name is None:
        return x
    if name in w:
        return w[name](x)
    weight = w[name + ".weight"]
    if name + ".bias" in w:
        return _layer_norm(x, weight, w[name + ".bias"], eps)
    return fused.rms_norm(x, weight.astype(ms.float32) + 1.0 if offset else weight, eps)


def _layer_norm(x, weight, bias, eps):
    """torch's LayerNorm over the last axis, in float32 (MindSpore's layer_norm function has no CPU kernel in a
    graph; the LayerNorm cell's primitive fixes eps at construction)."""
    xf = x.astype(ms.float32)
    centered = xf - xf.mean(-1, keep_dims=True)
    normed = centered * ops.rsqrt((centered * centered).mean(-1, keep_dims=True) + eps)
    return (normed * weight.astype(ms.float32) + bias.astype(ms.float32)).astype(x.dtype)


def _param(w, name):
    """A parameter by its path: the tensor (compiled `w`), or the attribute of its module (eager `w`)."""
    if name in w:
        return w[name]
    module, _, attr = name.rpartition(".")
    return getattr(w[module], attr)


def _linear(w, name, x):
    """x [..., in] -> [..., out] through the projection `name`: its module, or its weight and optional bias."""
    if name in w:
        return w[name](x)
    shape = x.shape
    weight = w[name + ".weight"]
    y = fused.linear(x.reshape(-1, shape[-1]), weight)  # x2d [N, in] @ weight [out, in]^T, as layers.Linear
    if name + ".bias" in w:
        y = y + w[name + ".bias"]
    return y.reshape(shape[:-1] + (weight.shape[0],))


def project_qkv(spec, w, x, prefix="self_attn."):
    """[B, S, hidden] -> q [B, H, S, D], k and v [B, KV, S, D] (q and k normed per head when qk_norm)."""
    bsz, q_len, _ = x.shape
    heads, kv_heads, head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
    if spec.fused_qkv:
        qkv = _linear(w, prefix + "qkv_proj", x)                                   # [B, S, (H + 2*KV) * D]
        q_size, kv_size = heads * head_dim, kv_heads * head_dim
        q, k, v = qkv[..., :q_size], qkv[..., q_size:q_size + kv_size], qkv[..., q_size + kv_size:]
    else:
        q, k, v = _linear(w, prefix + "q_proj", x), _linear(w, prefix + "k_proj", x), _linear(w, prefix + "v_proj", x)
    if spec.qk_norm_whole:  # OLMo 2: [B, S, H * D] normed as one vector
        q, k = _norm(w, prefix + "q_norm", q, spec.qk_norm_eps), _norm(w, prefix + "k_norm", k, spec.qk_norm_eps)
    q = q.reshape(bsz, q_len, heads, head_dim)
    k = k.reshape(bsz, q_len, kv_heads, head_dim)
    v = v.reshape(bsz, q_len, kv_heads, head_dim)
    if spec.qk_norm and not spec.qk_norm_whole:
        eps, offset = spec.qk_norm_eps, spec.norm_offset
        q, k = _norm(w, prefix + "q_norm", q, eps, offset), _norm(w, prefix + "k_norm", k, eps, offset)
    return q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2)


def attention(spec, w, x, cos, sin, mask, cache=None, layer_idx=None, last_only=False, prefix="self_attn."):
    """Self-attention of x [B, S, hidden] -> (out [B, S, hidden], this call's rotated keys and its values
    [B, KV, S, D]). With a cache, attends over the cache's keys too (and writes these into it). last_only: the
    output for the last position only ([B, 1, hidden]), from keys and values of every position."""
    bsz, q_len, _ = x.shape
    q, k, v = project_qkv(spec, w, x, prefix)                                      # [B, H or KV, S, D]
    if spec.rope:
        q, k = fused.apply_rotary_pos_emb(q, k, cos, sin, interleaved=spec.interleaved_rotary)
    new_k, new_v = k, v
    if cache is not None and cache.is_paged:  # serving's block pool (eager only): the paged op reads it in place
        if spec.softcap:
            raise NotImplementedError("attention logit soft-capping (Gemma 2) with serving's paged KV cache")
        if spec.sinks:
            raise NotImplementedError("attention sinks (gpt-oss) with serving's paged KV cache")
        out = cache.attend(q, k, v, layer_idx, mask, spec.scaling, attn_implementation=spec.attn_implementation)
    else:
        if cache is not None:
            k, v = cache.update(k, v, layer_idx)
        if last_only:
            q, mask, q_len = q[:, :, -1:, :], mask[:, :, -1:, :], 1
        out = fused.causal_attention(q, k, v, mask, spec.scaling, attn_implementation=spec.attn_implementation,
                                     softcap=spec.softcap, sinks=_param(w, prefix + "sinks") if spec.sinks else None)
    out = out.swapaxes(1, 2).reshape(bsz, q_len, spec.num_heads * spec.head_dim)  # [B, S, H * D]
    return _linear(w, prefix + spec.o_name, out), new_k, new_v


def mlp(spec, w, x, prefix="mlp."):
    """Gated MLP: down(act(gate(x)) * up(x)), SwiGLU (the fused silu_mul) unless the family names another act;
    without a gate (StarCoder2, Phi) down(act(up(x)))."""
    gate_name, up_name, down_name = (prefix + n if n else None for n in spec.names)
    if gate_name is None:
        return _linear(w, down_name, activation(spec.activation, _linear(w, up_name, x)))
    if spec.fused_gate_up:
        gate_up = _linear(w, prefix + "gate_up_proj", x)                           # [B, S, 2 * I]
        gate, up = gate_up[..., :spec.intermediate_size], gate_up[..., spec.intermediate_size:]
    else:
        gate, up = _linear(w, gate_name, x), _linear(w, up_name, x)
    if spec.activation in ("silu", "swish"):
        return _linear(w, down_name, fused.silu_mul(gate, up))
    return _linear(w, down_name, activation(spec.activation, gate) * up)


def moe(spec, w, x, prefix="mlp."):
    """MixtralSparseMoeBlock.construct over the weights (inference: no router jitter, no recorded router logits)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])                                                  # [T, H]
    router = w[prefix + "gate.weight"]
    # as MixtralTopKRouter: float32 rows may meet bf16 router weights (CPU), any other pair meets in the weight's dtype
    logits = fused.linear(x2.astype(router.dtype) if x2.dtype != ms.float32 or router.dtype != ms.bfloat16 else x2,
                          router)
    weights, indices = moe_ops.route_tokens(
        logits, spec.top_k, spec.scoring, spec.norm_topk_prob, spec.topk_method, spec.n_group, spec.topk_group,
        spec.routed_scaling_factor, w[prefix + "gate.e_score_correction_bias"] if spec.correction_bias else None)
    out = fused.moe_experts(x2, indices, weights, w[prefix + "experts.gate_up_proj"], w[prefix + "experts.down_proj"])
    if spec.shared == "shared_expert":
        out = out + ops.sigmoid(_linear(w, prefix + "shared_expert_gate", x2)) * mlp(spec.shared_mlp, w, x2,
                                                                                      prefix + "shared_expert.")
    elif spec.shared == "shared_experts":
        out = out + mlp(spec.shared_mlp, w, x2, prefix + "shared_experts.")
    return out.reshape(shape)


def _mlp_of(spec, w, x):
    if spec.moe is not None:
        return moe(spec.moe, w, x)
    return w["mlp"](x) if spec.mlp is None else mlp(spec.mlp, w, x)


def decoder_layer(spec, w, hidden, cos, sin, mask, cache=None, layer_idx=None, last_only=False):
    """hidden [B, S, hidden] -> (hidden, keys, values): pre-norm attention and MLP, each added to the residual
    stream (normed first when sandwich_norm). keys and values: this call's [B, KV, S, D] (None when the layer's
    own attention module ran). last_only: see `attention`."""
    pre_attn, post_attn, pre_mlp, post_mlp = spec.norm_names
    residual = hidden
    x = _norm(w, pre_attn, hidden, spec.eps, spec.norm_offset)
    if spec.attention is None:
        out, keys, values = w["self_attn"](x, cos, sin, mask, cache), None, None
    else:
        out, keys, values = attention(spec.attention, w, x, cos, sin, mask, cache, layer_idx, last_only)
    if last_only:
        residual = residual[:, -1:, :]
        if spec.parallel_residual:
            x = x[:, -1:, :]
    if spec.parallel_residual:  # Phi: one norm feeds both sublayers, both added to the residual stream
        return residual + out + _mlp_of(spec, w, x), keys, values
    if spec.sandwich_norm:
        out = _norm(w, post_attn, out, spec.eps, spec.norm_offset)
    hidden = residual + out
    x = _norm(w, pre_mlp, hidden, spec.eps, spec.norm_offset)
    out = _mlp_of(spec, w, x)
    if spec.sandwich_norm:
        out = _norm(w, post_mlp, out, spec.eps, spec.norm_offset)
    return hidden + out, keys, values


@functools.lru_cache(maxsize=None)
def layer_graph(spec, with_cache, last_only=False):
    """`decoder_layer` compiled: (hidden, cos, sin, mask, weights) -> hidden, and with_cache also keys and
    values for the cache. One graph per spec serves every layer; it compiles once per input shape."""

    def compiled_decoder_layer(hidden, cos, sin, mask, weights):
        hidden, keys, values = decoder_layer(spec, weights, hidden, cos, sin, mask, last_only=last_only)
        if with_cache:
            return hidden, keys, values
        return hidden

    return ms.jit(compiled_decoder_layer)


def graph_weights(layer, differentiable):
    """The graph's weight input: {parameter name relative to the layer: tensor} (see the module docstring)."""
    if differentiable:
        tensors = {name: p.reshape(p.shape) for name, p in layer.parameters_and_names()}
    else:
        tensors = {name: ms.Tensor(p) for name, p in layer.parameters_and_names()}
    return ms.mutable(tensors)
