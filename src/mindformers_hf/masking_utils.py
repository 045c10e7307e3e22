"""Additive attention masks for decoder-only models (causal + padding, optional sliding window)."""
import mindspore as ms
from mindspore import ops

# Large enough to zero a probability after softmax, small enough that adding two never overflows float32.
MASK_VALUE = -1e9


def create_causal_mask(attention_mask, batch_size, query_length, past_length, sliding_window=None):
    """float32 [B or 1, 1, S, T] with 0 where attention is allowed and MASK_VALUE elsewhere.

    attention_mask: [B, T] of 1 (token) / 0 (padding) over past + current tokens, or None.
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
    zeros = ops.zeros(allowed.shape, ms.float32)
    return ops.select(allowed, zeros, ops.fill(ms.float32, allowed.shape, MASK_VALUE))
