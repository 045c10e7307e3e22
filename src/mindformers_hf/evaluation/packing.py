"""Log-likelihood requests packed into model rows: rows that share their context are scored in one row, the
context once.

A multiple-choice question is N requests (context, choice_i); lm_eval's `hf` backend runs N rows of
context + choice_i[:-1] (it shares a row only between choices that differ in their last token). Here the
context is followed by each choice's tokens one after the other, and a 4-D mask lets each choice's tokens see
the context and the earlier tokens of their own choice only, with position ids continuing from the context for
every choice: each token sees exactly what it sees in its own row, at the same positions, so the numbers are
the same (up to float summation order); the decoder runs on context + all choices once instead of N times.

This needs a model whose attention follows the mask and the position ids only: LLaMA-shaped models
(`causal_masks`, which takes prebuilt per-layer-type masks); ALiBi attention (Baichuan-13B) reads distances
between columns and is scored row by row, as is any other model.
"""
from dataclasses import dataclass

import numpy as np

from ..masking_utils import MASK_VALUE


@dataclass
class PackedRow:
    tokens: list      # the shared prefix, then each packed row's remaining tokens
    positions: list   # position id of every column
    segments: list    # 0 for the prefix, i >= 1 for the i-th packed row's tokens
    reads: list       # (request index, [column of the logits predicting each continuation token])

    @property
    def shared(self):
        return max(self.segments) > 1


def shares_contexts(model):
    """Whether `model` scores packed rows exactly: attention by mask and position ids only (module docstring)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(base, "layers", None)
    if not hasattr(base, "causal_masks") or not layers:
        return False
    for layer in layers:
        if getattr(getattr(layer, "self_attn", None), "alibi", False):
            return False
        if getattr(layer, "attention_type", "full_attention") not in ("full_attention", "sliding_attention"):
            return False
    return True


def pack_requests(pairs, max_length, share=True):
    """[(context tokens, continuation tokens)] -> PackedRow list, longest first (as HFLM's Collator).

    Each request reads the row (context + continuation)[-(max_length + 1):][:-1], as HFLM. Identical rows are
    one row; with `share`, rows whose tokens before their continuation agree, and are at least as many as the
    continuation's, are packed after one copy of them, while the packed row stays within max_length tokens (a row
    never longer than HFLM's own)."""
    rows = {}
    for index, (context, continuation) in enumerate(pairs):
        whole = (list(context) + list(continuation))[-(max_length + 1):]
        rows.setdefault(tuple(whole[:-1]), []).append(index)
    groups = {}
    for row, members in sorted(rows.items()):
        n = max(len(pairs[i][1]) for i in members)
        shared = row[:len(row) - n + 1]
        # Packing saves the shared tokens once per extra row but lengthens the packed row's attention: it pays when
        # they are at least as many as the tokens after them (a question before its choices), not for rolling
        # windows (one prefix token before a whole document).
        prefix = shared if share and len(shared) >= n - 1 else row
        groups.setdefault(prefix, []).append(row)
    packed = []
    for prefix, group in groups.items():
        current = None
        for row in group:
            suffix = row[len(prefix):]
            if current is None or (len(current.tokens) + len(suffix) > max_length and current.reads):
                current = PackedRow(list(prefix), list(range(len(prefix))), [0] * len(prefix), [])
                packed.append(current)
            segment = max(current.segments) + 1
            start = len(current.tokens)
            current.tokens += suffix
            current.positions += range(len(prefix), len(row))
            current.segments += [segment] * len(suffix)
            column = lambda i: i if i < len(prefix) else start + i - len(prefix)  # noqa: E731
            for index in rows[row]:
                n = len(pairs[index][1])
                current.reads.append((index, [column(i) for i in range(len(row) - n, len(row))]))
    packed.sort(key=lambda p: (-len(p.tokens), p.tokens))
    return packed


def chunk_masks(chunk, width, windows):
    """{layer type: [B, 1, W, W] float32 additive mask} and [B, W] position ids for PackedRows left-padded to
    `width`. A key is visible to a query when it is a real token, not after it, in the prefix or the query's
    own segment, and -- for windowed layer types -- fewer than `window` positions back (LlamaModel.causal_masks'
    rule, in positions). Padded columns get position 1 (transformers' rule)."""
    rows = len(chunk)
    segments = np.full((rows, width), -1, np.int64)
    positions = np.ones((rows, width), np.int64)
    for b, p in enumerate(chunk):
        segments[b, width - len(p.tokens):] = p.segments
        positions[b, width - len(p.tokens):] = p.positions
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    column = np.arange(width)
    allowed = (seg_k >= 0) & (column[None, None, :] <= column[None, :, None]) & ((seg_k == 0) | (seg_k == seg_q))
    masks = {}
    for key, window in windows.items():
        keep = allowed
        if window is not None:
            keep = allowed & (positions[:, :, None] - positions[:, None, :] < window)
        masks[key] = np.where(keep, np.float32(0.0), np.float32(MASK_VALUE)).reshape(rows, 1, width, width)
    return masks, positions
