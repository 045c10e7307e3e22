"""Plain MindSpore reference implementations of the ops models call, written to match HF's formulas."""
import mindspore as ms
from mindspore import ops

_bmm = ops.BatchMatMul()
_bmm_t = ops.BatchMatMul(transpose_b=True)


def rms_norm(x, weight, eps):
    """HF's LlamaRMSNorm: normalise in float32, cast back, then scale."""
    dtype = x.dtype
    h = x.astype(ms.float32)
    h = h * ops.rsqrt(ops.mean(h * h, -1, keep_dims=True) + eps)
    return weight * h.astype(dtype)


def silu_mul(gate, up):
    """SwiGLU's elementwise part: silu(gate) * up."""
    return ops.silu(gate) * up


def rotate_half(x):
    half = x.shape[-1] // 2
    return ops.cat((-x[..., half:], x[..., :half]), -1)


def apply_rotary_pos_emb(q, k, cos, sin):
    """q, k: [B, H, S, D]; cos, sin: [B, S, D] (HF's half-split layout)."""
    cos = cos.expand_dims(1)
    sin = sin.expand_dims(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def causal_attention(q, k, v, mask, scale):
    """Grouped-query attention without copying k/v per query head.

    q: [B, H, S, D]; k, v: [B, KV, T, D]; mask: additive float32 [B, 1, S, T] or None.
    Query heads are grouped under their kv head: [B, KV, G*S, D] @ [B, KV, D, T].
    Scores and softmax are float32 whatever the compute dtype. Returns [B, H, S, D].
    """
    bsz, n_heads, q_len, head_dim = q.shape
    n_kv, kv_len = k.shape[1], k.shape[2]
    groups = n_heads // n_kv
    qg = q.reshape(bsz, n_kv, groups * q_len, head_dim)
    scores = _bmm_t(qg, k).astype(ms.float32) * scale          # [B, KV, G*S, T]
    if mask is not None:
        scores = scores.reshape(bsz, n_kv, groups, q_len, kv_len) + mask.expand_dims(1)
        scores = scores.reshape(bsz, n_kv, groups * q_len, kv_len)
    probs = ops.softmax(scores, -1).astype(v.dtype)
    out = _bmm(probs, v)                                          # [B, KV, G*S, D]
    return out.reshape(bsz, n_heads, q_len, head_dim)
