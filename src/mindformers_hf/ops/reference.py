"""Plain MindSpore reference implementations of the ops models call, written to match HF's formulas.

These are the ground truth every faster kernel is tested against, and the implementation used wherever no
kernel is selected. Only classic `mindspore.ops` appear here: they have kernels on every backend.
"""
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


def add_rms_norm(x, residual, weight, eps):
    """Residual add then RMSNorm: returns (rms_norm(x + residual), x + residual) -- the normed input of the
    next sublayer and the new residual stream."""
    summed = x + residual
    return rms_norm(summed, weight, eps), summed


def silu_mul(gate, up):
    """SwiGLU's elementwise part: silu(gate) * up."""
    return ops.silu(gate) * up


def swiglu(x, dim=-1):
    """silu(a) * b where a, b are the two halves of x along `dim` (a fused gate_up projection's output)."""
    gate, up = ops.chunk(x, 2, dim)
    return silu_mul(gate, up)


def rotate_half(x):
    half = x.shape[-1] // 2
    return ops.cat((-x[..., half:], x[..., :half]), -1)


def rotate_interleaved(x):
    """Pairs (x0, x1), (x2, x3), ... -> (-x1, x0), (-x3, x2), ... (GPT-J / GLM layout)."""
    shape = x.shape
    pairs = x.reshape(shape[:-1] + (shape[-1] // 2, 2))
    return ops.stack((-pairs[..., 1], pairs[..., 0]), -1).reshape(shape)


def apply_rotary_pos_emb(q, k, cos, sin, interleaved=False):
    """q: [B, H, S, D], k: [B, KV, S, D]; cos, sin: [B or 1, S, R] as HF's rotary module makes them
    (cat(freqs, freqs)). The first R <= D channels rotate and the rest pass through (partial rotary).

    interleaved=False is HF's rotate_half layout (channel i pairs with i + R/2). interleaved=True pairs
    adjacent channels (2i, 2i+1), both rotated by frequency i, i.e. by cos[..., i] (GPT-J / GLM).
    """
    rot = cos.shape[-1]
    if interleaved:
        # frequency i for both channels of pair i: [f0, f0, f1, f1, ...]
        half_cos, half_sin = cos[..., :rot // 2], sin[..., :rot // 2]
        cos = ops.stack((half_cos, half_cos), -1).reshape(cos.shape)
        sin = ops.stack((half_sin, half_sin), -1).reshape(sin.shape)
    rotate = rotate_interleaved if interleaved else rotate_half
    cos = cos.expand_dims(1)
    sin = sin.expand_dims(1)

    def apply(x):
        if rot == x.shape[-1]:
            return x * cos + rotate(x) * sin
        x_rot, x_pass = x[..., :rot], x[..., rot:]
        return ops.cat((x_rot * cos + rotate(x_rot) * sin, x_pass), -1)

    return apply(q), apply(k)


def causal_attention(q, k, v, mask, scale, softcap=None, sinks=None):
    """Grouped-query attention without copying k/v per query head.

    q: [B, H, S, D]; k: [B, KV, T, D]; v: [B, KV, T, Dv]; mask: additive float32 [B or 1, 1, S, T] or None.
    Query heads are grouped under their kv head: [B, KV, G*S, D] @ [B, KV, D, T].
    Scores and softmax are float32 whatever the compute dtype. Returns [B, H, S, Dv].
    sinks (gpt-oss): a logit [H] per head that joins every row's softmax and is dropped after it (attention may
    go nowhere).
    """
    bsz, n_heads, q_len, head_dim = q.shape
    n_kv, kv_len = k.shape[1], k.shape[2]
    groups = n_heads // n_kv
    qg = q.reshape(bsz, n_kv, groups * q_len, head_dim)
    scores = _bmm_t(qg, k).astype(ms.float32) * scale          # [B, KV, G*S, T]
    if softcap is not None:                                       # Gemma 2's attention logit soft-capping
        scores = ops.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.reshape(bsz, n_kv, groups, q_len, kv_len) + mask.expand_dims(1)
        scores = scores.reshape(bsz, n_kv, groups * q_len, kv_len)
    if sinks is not None:                                         # one more column per row: the head's sink
        rows = scores.reshape(bsz, n_kv, groups, q_len, kv_len)
        sink = ops.broadcast_to(sinks.astype(ms.float32).reshape(1, n_kv, groups, 1, 1),
                                (bsz, n_kv, groups, q_len, 1))
        probs = ops.softmax(ops.cat((rows, sink), -1), -1)[..., :kv_len]
        probs = probs.reshape(bsz, n_kv, groups * q_len, kv_len).astype(v.dtype)
    else:
        probs = ops.softmax(scores, -1).astype(v.dtype)
    out = _bmm(probs, v)                                          # [B, KV, G*S, D]
    return out.reshape(bsz, n_heads, q_len, v.shape[-1])


def paged_attention(q, key_cache, value_cache, block_tables, mask, scale, block_size=None):
    """Attention over keys/values kept in a block pool: q [B, H, S, D]; key_cache [num_blocks, block_size, KV, D]
    and value_cache [num_blocks, block_size, KV, Dv], or both flat ([num_blocks * block_size, KV, D]) with
    `block_size` given; block_tables [B, M] int32 (row b's position j is in block block_tables[b, j // block_size]);
    mask additive float32 [B or 1, 1, S, T], T <= M * block_size. Gathers each row's T positions into
    [B, KV, T, D] and runs causal_attention. Returns [B, H, S, Dv]."""
    if key_cache.ndim == 3:
        if block_size is None:
            raise ValueError("paged_attention: flat [slots, KV, D] pools need block_size")
        key_cache, value_cache = (pool.reshape(pool.shape[0] // block_size, block_size, *pool.shape[1:])
                                  for pool in (key_cache, value_cache))
    bsz, length = q.shape[0], mask.shape[-1]
    num_blocks, block_size, kv_heads = key_cache.shape[0], key_cache.shape[1], key_cache.shape[2]
    offsets = ops.arange(block_size, dtype=ms.int32)
    slots = (block_tables.expand_dims(-1) * block_size + offsets).reshape(bsz, -1)[:, :length].reshape(-1)
    contexts = []
    for cache in (key_cache, value_cache):
        rows = ops.gather(cache.reshape(num_blocks * block_size, kv_heads, cache.shape[3]), slots, 0)
        contexts.append(rows.reshape(bsz, length, kv_heads, cache.shape[3]).swapaxes(1, 2))   # [B, KV, T, D]
    return causal_attention(q, contexts[0], contexts[1], mask, scale)


def cross_entropy(logits, labels, ignore_index=-100):
    """torch's cross_entropy(reduction="none") over rows: logits [N, V] float32, labels [N] integers; the
    loss of each row, 0 where the label is ignore_index."""
    return ops.cross_entropy(logits, labels.astype(ms.int32), ignore_index=ignore_index, reduction="none")
