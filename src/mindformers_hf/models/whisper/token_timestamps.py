"""Whisper token-level timestamps (transformers' `_extract_token_timestamps`): the decoder's cross-attention
probabilities in the generation config's `alignment_heads` ([layer, head] pairs), normalised over the tokens,
median-filtered over the audio frames, averaged over the heads, then aligned to the frames by dynamic time
warping; each token's time is the frame where the warping path first reaches it, times 0.02 s.

transformers reads the probabilities from `output_attentions` during generation. Our attention kernels return
none, so they are computed afterwards for those heads only, by one eager decoder pass over the finished
sequences (prompt and generated tokens, padding included, as generation fed them): causal attention makes
position t's probabilities the ones generation computed at step t. For beam search this is the final beam's
history, which is what transformers gathers through `beam_indices` when there is one sequence per call.
"""
import numpy as np
import mindspore as ms

from ...masking_utils import create_causal_mask


def median_filter(inputs, filter_width):
    """transformers' _median_filter in numpy: reflect-pad the last axis by filter_width // 2 (torch's "reflect"
    leaves the edge out, as numpy's does), then the median of each window."""
    if filter_width <= 0 or filter_width % 2 != 1:
        raise ValueError("`filter_width` should be an odd number")
    pad = filter_width // 2
    if inputs.shape[-1] <= pad:
        return inputs
    padded = np.pad(inputs, [(0, 0)] * (inputs.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, filter_width, axis=-1)
    return np.sort(windows, -1)[..., pad]


def dynamic_time_warping(matrix):
    """transformers' _dynamic_time_warping (float32 costs; ties go to the left step, then the upper), computed
    by anti-diagonals: every cell of one depends only on the two before it. Returns (text_indices,
    time_indices) of the path."""
    rows, cols = matrix.shape
    cost = np.full((rows + 1, cols + 1), np.inf, np.float32)
    trace = -np.ones((rows + 1, cols + 1), np.float32)
    cost[0, 0] = 0
    for diagonal in range(2, rows + cols + 1):
        i = np.arange(max(1, diagonal - cols), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        step = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        cost[i, j] = matrix[i - 1, j - 1] + np.choose(step, [c0, c1, c2])  # float64 sum, stored as float32
        trace[i, j] = step
    i, j = rows, cols
    trace[0, :] = 2
    trace[:, 0] = 1
    text, time = [], []
    while i > 0 or j > 0:
        text.append(i - 1)
        time.append(j - 1)
        move = trace[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return np.array(text)[::-1], np.array(time)[::-1]


def alignment_probs(model, encoder_hidden, sequences, mask, alignment_heads):
    """Cross-attention probabilities [B, heads, S - 1, frames] of `alignment_heads` at every position but the
    last of `sequences` [B, S] (a generated sequence's last token was never fed), from one decoder pass.
    `mask` [B, S] masks left padding of the prompt (positions then count the unmasked tokens, as in
    generation)."""
    decoder = model.model.decoder
    ids = np.asarray(sequences[:, :-1], np.int64)
    mask = np.asarray(mask[:, :-1], np.int64)
    extra, mask_tensor = {}, None
    if not mask.all():
        mask_tensor = ms.Tensor(mask)
        extra = dict(attention_mask=mask_tensor,
                     position_ids=ms.Tensor(np.where(mask == 0, 0, np.cumsum(mask, -1) - 1).astype(np.int32)))
    out = decoder(input_ids=ms.Tensor(ids), encoder_hidden_states=encoder_hidden, use_cache=False,
                  output_hidden_states=True, **extra)
    causal = create_causal_mask(mask_tensor, ids.shape[0], ids.shape[1], 0)
    per_layer = {}
    for layer_idx, head in alignment_heads:
        per_layer.setdefault(int(layer_idx), []).append(int(head))
    probs = {}
    for layer_idx, heads in per_layer.items():
        layer, x = decoder.layers[layer_idx], out.hidden_states[layer_idx]  # the layer's input
        x = x + layer.self_attn(layer.self_attn_layer_norm(x), attention_mask=causal)
        got = layer.encoder_attn.cross_attention_probs(layer.encoder_attn_layer_norm(x), encoder_hidden,
                                                       heads).asnumpy()
        for k, head in enumerate(heads):
            probs[(layer_idx, head)] = got[:, k]
    return np.stack([probs[(int(l), int(h))] for l, h in alignment_heads], 1)


def extract_token_timestamps(weights, num_input_ids, num_frames, median_filter_width, time_precision=0.02):
    """transformers' _extract_token_timestamps after the weights are gathered: `weights` [B, heads, S - 1,
    frames] -> float32 [B, S] times, 0 for the `num_input_ids` prompt tokens and the last token copying the one
    before. `num_frames` (mel frames left in the window, per row of the generate call's batch, or None) crops
    the audio to num_frames // 2 encoder frames; row b uses num_frames[b], as transformers indexes it (after a
    temperature fallback the call's rows are not the first ones, and transformers still reads these)."""
    batch, length = weights.shape[0], weights.shape[2]
    timestamps = np.zeros((batch, length + 1), np.float32)
    weights = weights[:, :, num_input_ids:]
    if weights.shape[2] == 0:
        return timestamps
    if num_frames is not None and len(np.unique(num_frames)) == 1:
        # transformers crops a batch of equal lengths, then each row again (twice is a no-op unless the window
        # starts past the audio: a negative length then cuts from the end twice)
        weights = weights[..., :int(num_frames[0]) // 2]
    for b in range(batch):
        matrix = weights[b] if num_frames is None else weights[b, ..., :int(num_frames[b]) // 2]
        with np.errstate(divide="ignore", invalid="ignore"):  # one token: 0 / 0, as in transformers
            matrix = (matrix - matrix.mean(-2, keepdims=True)) / matrix.std(-2, keepdims=True)
        matrix = median_filter(matrix, median_filter_width).mean(0)
        text, time = dynamic_time_warping(-matrix.astype(np.float64))
        jumps = np.pad(np.diff(text), (1, 0), constant_values=1).astype(bool)
        jump_times = time[jumps] * time_precision
        timestamps[b] = np.concatenate([np.zeros(num_input_ids), jump_times, jump_times[-1:]])
    return timestamps
