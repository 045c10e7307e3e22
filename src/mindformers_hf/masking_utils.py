"""Additive attention masks for decoder-only models (causal + padding, optional sliding window and packed
sequences)."""
import numpy as np
import mindspore as ms
from mindspore import ops

# Large enough to zero a probability after softmax, small enough that adding two never overflows float32.
MASK_VALUE = -1e9


def packed_sequence_ids(position_ids, attention_mask, use_cache, past_key_values, config):
    """transformers' packed-sequence detection (DataCollatorWithFlattening's rows): with `position_ids` given,
    no attention mask and no cache, a new sequence starts wherever a position does not follow the previous
    one. Returns [B, T] int32 sequence indices, or None when nothing is packed or the condition does not hold.
    As in transformers, the cache counts as on when `use_cache` is None and `config.use_cache` is true, and
    the flash-attention implementations separate the sequences even then."""
    if position_ids is None or attention_mask is not None or past_key_values is not None:
        return None
    if position_ids.ndim != 2:  # M-RoPE's [3, B, T] (Qwen2-VL): transformers reads packing from text positions only
        return None
    # transformers' flash-attention path separates packed rows by position_ids whatever the cache setting
    flash = str(getattr(config, "_attn_implementation", None) or "").startswith("flash_attention")
    if not flash and (use_cache if use_cache is not None else getattr(config, "use_cache", True)):
        return None
    positions = position_ids.asnumpy().astype(np.int64)                                 # [B or 1, T] (host)
    steps = np.diff(positions, prepend=positions[:, :1] - 1, axis=-1)
    ids = np.cumsum(steps != 1, axis=-1)
    return None if (ids[:, -1] == 0).all() else ms.Tensor(ids.astype(np.int32))


def create_causal_mask(attention_mask, batch_size, query_length, past_length, sliding_window=None, packed=None):
    """float32 [B or 1, 1, S, T] with 0 where attention is allowed and MASK_VALUE elsewhere.

    attention_mask: [B, T] of 1 (token) / 0 (padding) over past + current tokens, or None.
    packed: [B or 1, S] sequence indices (packed_sequence_ids): tokens attend only within their sequence.
    Returns None when nothing is masked (a single new token and no padding).
    """
    total = past_length + query_length
    if attention_mask is None and query_length == 1 and sliding_window is None:
        return None
    key_pos = ops.arange(total, dtype=ms.int32).reshape(1, total)                           # [1, T]
    query_pos = (ops.arange(query_length, dtype=ms.int32) + past_length).reshape(query_length, 1)  # [S, 1]
    allowed = key_pos <= query_pos                                                           # [S, T]
    if sliding_window is not None:
        allowed = ops.logical_and(allowed, key_pos > query_pos - sliding_window)
    allowed = allowed.reshape(1, 1, query_length, total)
    if attention_mask is not None:
        if tuple(attention_mask.shape) != (batch_size, total):
            # HF fails on another batch size with an IndexError (or ignores an all-ones mask), pads a short mask
            # with zeros and reads a long one from the left: refused here, never reshaped (docs/differences.md)
            raise IndexError(f"attention_mask has shape {tuple(attention_mask.shape)}, but the input ids need "
                             f"({batch_size}, {total}): one row per sequence, one column per token (past + new)")
        padding = attention_mask.astype(ms.bool_).reshape(batch_size, 1, 1, total)
        allowed = ops.logical_and(allowed, padding)
    if packed is not None:  # (no cache here, so S == T)
        rows = packed.shape[0]
        same = packed.reshape(rows, 1, query_length, 1) == packed.reshape(rows, 1, 1, query_length)
        allowed = ops.logical_and(allowed, same)
    zeros = ops.zeros(allowed.shape, ms.float32)
    return ops.select(allowed, zeros, ops.fill(ms.float32, allowed.shape, MASK_VALUE))
