"""Fused-op entry points called by model files: `from ... import ops as fused; fused.rms_norm(x, w, eps)`.

Each name below runs one implementation chosen by `registry.select`: the plain MindSpore reference
(reference.py), a C++ CPU kernel (csrc/, built at first use) or an Ascend built-in, by device target, by
the `MINDFORMERS_HF_KERNELS` mode / `use_kernels()` block and, for attention, by `attn_implementation`.
Model files only ever call these names. docs/adding_a_fused_op.md explains how to add one.
"""
import functools

import mindspore as _ms
from mindspore import ops as _ms_ops

from . import activation, attention, bf16, gemm, loss, norm, rotary  # noqa: F401  (each registers its implementations)
from .moe import moe_experts  # noqa: F401  (MoE routing, experts and router loss: ops/moe.py)
from . import reference
from .reference import rotate_half
from .registry import implementation_name, implementations, use_kernels
from .registry import select as _select
from ..utils import device_target


_MATMUL_T = _ms_ops.MatMul(transpose_b=True)
# run by the interpreter under ms.jit, as `select` (registry.py): whether MindSpore's CPU kernels do the work
_cpu = functools.partial(lambda: device_target() == "CPU")


def linear(x, weight):
    """x [N, in] @ weight [out, in]^T (no bias). A bfloat16 weight with float32 activations (a bf16 model on CPU,
    which holds its weights in bf16 and computes in float32) runs the `bf16_linear` op and returns float32;
    float32 runs the `linear` op (MatMul, or the CPU kernel where measured faster); other dtypes run MatMul."""
    if weight.dtype == x.dtype and (x.dtype != _ms.bfloat16 or not _cpu()):
        if x.dtype == _ms.float32:
            return _select("linear")(x, weight)  # float32: MatMul, or the CPU GEMM kernel (ops/gemm.py)
        return _MATMUL_T(x, weight)
    if x.dtype == _ms.bfloat16:  # bf16 activations on CPU (an adapter casting to its bf16 weights): float32
        x = widen(x, _ms.float32)
    return _select("bf16_linear")(x, weight)


def embedding(weight, ids, dtype):
    """Rows `ids` (any shape) of weight [V, H] -> [*ids.shape, H] as `dtype`: a bf16 table read as float32 runs the
    `bf16_embedding` op (gather and widen in one pass); otherwise a gather, then a cast if needed."""
    if weight.dtype == _ms.bfloat16 and dtype == _ms.float32:
        rows = _select("bf16_embedding")(weight, ids.reshape(-1))
        return rows.reshape(tuple(ids.shape) + (weight.shape[1],))
    rows = _ms_ops.gather(weight, ids, 0)
    return rows if rows.dtype == dtype else rows.astype(dtype)


def widen(x, dtype):
    """x as `dtype` (float32 activations from bf16 weights: embedding rows, norm scales); bf16 -> float32 runs
    the `bf16_widen` op, MindSpore's own cast of bf16 on CPU being much slower."""
    if x.dtype == dtype:
        return x
    if x.dtype == _ms.bfloat16 and dtype == _ms.float32:
        return _select("bf16_widen")(x)
    return x.astype(dtype)


def rms_norm(x, weight, eps):
    """HF's RMSNorm over the last axis: weight * x / sqrt(mean(x^2) + eps), computed in float32."""
    return _select("rms_norm")(x, weight, eps)


def add_rms_norm(x, residual, weight, eps):
    """(rms_norm(x + residual), x + residual): the next sublayer's input and the new residual stream."""
    return _select("add_rms_norm")(x, residual, weight, eps)


def silu_mul(gate, up):
    """silu(gate) * up, the elementwise part of a SwiGLU MLP."""
    return _select("silu_mul")(gate, up)


def swiglu(x, dim=-1):
    """silu(a) * b for the two halves a, b of x along `dim` (a fused gate_up projection's output)."""
    return _select("swiglu")(x, dim)


def apply_rotary_pos_emb(q, k, cos, sin, interleaved=False):
    """Rotary embedding of q [B, H, S, D] and k [B, KV, S, D] with cos/sin [B or 1, S, R] (HF's layout);
    R < D rotates only the first R channels. interleaved=True pairs channels (2i, 2i+1) as GPT-J/GLM do."""
    return _select("apply_rotary_pos_emb")(q, k, cos, sin, interleaved)


def causal_attention(q, k, v, mask, scale, attn_implementation=None, softcap=None, sinks=None):
    """softmax(q k^T * scale + mask) v with grouped KV heads: q [B, H, S, D], k [B, KV, T, D], v [B, KV, T, Dv]
    (Dv may differ from D, as in DeepSeek's latent attention), mask an additive float32 [B or 1, 1, S, T] or
    None (no masking). Returns [B, H, S, Dv].
    attn_implementation: HF's name ("eager", "sdpa", "flash_attention_2"); None behaves as "sdpa".
    softcap (Gemma 2): scores -> tanh(scores / softcap) * softcap before the mask; only the reference has it
    (as in HF, where only eager attention soft-caps). sinks (gpt-oss): a logit [H] per head joining each row's
    softmax, then dropped; only the reference has it."""
    if softcap is not None or sinks is not None:
        return reference.causal_attention(q, k, v, mask, scale, softcap, sinks)
    return _select("causal_attention", attn_implementation)(q, k, v, mask, scale)


def paged_attention(q, key_cache, value_cache, block_tables, mask, scale, attn_implementation=None, block_size=None):
    """causal_attention over keys/values in a paged pool (the serving engine's KV cache): q [B, H, S, D];
    key_cache [num_blocks, block_size, KV, D], value_cache [num_blocks, block_size, KV, Dv] -- or both flat,
    [num_blocks * block_size, KV, D], with `block_size` given (inside a MindSpore graph, reshaping a pool
    Parameter to 4-d copies the whole pool at every call); block_tables [B, M]
    int32, row b's context position j in block block_tables[b, j // block_size]; mask additive float32
    [B or 1, 1, S, T] with T <= M * block_size (it also hides positions a row does not have). Returns
    [B, H, S, Dv]. attn_implementation as for causal_attention."""
    return _select("paged_attention", attn_implementation)(q, key_cache, value_cache, block_tables, mask, scale,
                                                           block_size)


def cross_entropy(logits, labels, ignore_index=-100):
    """Per-row cross-entropy of logits [N, V] against integer labels [N] (torch's reduction="none"): 0 on rows
    whose label is ignore_index; computed in float32."""
    return _select("cross_entropy")(logits, labels, ignore_index)


__all__ = ["add_rms_norm", "apply_rotary_pos_emb", "causal_attention", "cross_entropy", "embedding", "implementation_name",
           "implementations", "linear", "paged_attention", "rms_norm", "rotate_half", "silu_mul", "swiglu",
           "use_kernels", "widen"]
