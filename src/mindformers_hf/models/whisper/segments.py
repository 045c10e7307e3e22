"""Whisper's segments and dictionary outputs (transformers' WhisperGenerationMixin helpers of the same names): a
window's tokens split into segments at timestamp pairs, one row's output of a generate call, the rows stacked back
into a Generate*EncoderDecoderOutput, and segment dicts converted to the caller's kind of tensor.
"""
import numpy as np

from ...modeling_outputs import ModelOutput, _CacheAlias


def _retrieve_segments(tokens, timestamp_begin, seek_frames, stride, time_offset, time_precision,
                       time_precision_features, idx_offset):
    """transformers' _retrieve_segment: a window's tokens split at each pair of consecutive timestamps, as
    segment dicts (`start`, `end` in seconds, float64; `tokens`; `idxs`, their positions in the window's
    sequence), and how many mel frames to seek. Without a single timestamp before the end, the text after the
    last pair is dropped and the next window starts at that pair's time."""
    stamps = tokens >= timestamp_begin
    single_ending = len(tokens) >= 2 and not stamps[-2] and stamps[-1]
    slices = [i + 1 for i in range(len(tokens) - 1) if stamps[i] and stamps[i + 1]]
    offset = np.float64(time_offset)
    if not slices:
        # the whole window is one segment; it ends at the last timestamp, or at the window's end
        # (transformers computes that from int64 frames times a float, in float32)
        last = int(np.float32(seek_frames) * np.float32(time_precision_features) / np.float32(time_precision))
        if stamps.any() and tokens[np.flatnonzero(stamps)[-1]] != timestamp_begin:
            last = np.float64(tokens[np.flatnonzero(stamps)[-1]] - timestamp_begin)
        return [{"start": offset, "end": offset + last * time_precision, "tokens": tokens,
                 "idxs": (idx_offset, idx_offset + len(tokens))}], seek_frames
    if single_ending:
        slices.append(len(tokens))
    else:  # the last pair's second timestamp stays in the last segment
        slices[-1] += 1
    pieces = []
    for k, (start, end) in enumerate(zip([0] + slices[:-1], slices)):
        piece = tokens[start:end]
        last = -1 if k < len(slices) - 1 or single_ending else -2
        pieces.append({"start": offset + np.float64(piece[0] - timestamp_begin) * time_precision,
                       "end": offset + np.float64(piece[last] - timestamp_begin) * time_precision,
                       "tokens": piece, "idxs": (idx_offset + start, idx_offset + end)})
    if single_ending:
        return pieces, seek_frames
    return pieces, int(tokens[slices[-1] - 2] - timestamp_begin) * stride


def _row_output(result, j, config, times):
    """transformers' _postprocess_outputs for row j of one generate call: the row's sequence, or with
    return_dict_in_generate a dict of its sequence, scores (along its beam), logits, beam indices and times."""
    sequence = result["sequences"][j]
    if not config.return_dict_in_generate:
        return sequence
    beam = "beam_indices" in result
    out = {"sequences": sequence}
    if beam:
        out["sequences_scores"] = np.asarray(result["sequences_scores"][j], np.float32)
    if config.output_scores:
        if beam:  # transformers picks each step's row by the beam indices (-1 past the end: the last row)
            out["scores"] = [step[b] for step, b in zip(result["scores"], result["beam_indices"][j])]
        else:
            out["scores"] = [step[j] for step in result["scores"]]
    if config.output_logits:  # row j of each step's logits (for beam search: beam j of the first audio, as there)
        out["logits"] = [step[j] for step in result["logits"]]
    if beam:
        out["beam_indices"] = result["beam_indices"][j].astype(np.int32)  # transformers' beam indices are int32
    if times is not None:
        out["token_timestamps"] = times
    return out


class GenerateEncoderDecoderOutput(_CacheAlias, ModelOutput):
    _fields = ("sequences", "scores", "logits", "encoder_attentions", "encoder_hidden_states", "decoder_attentions",
               "cross_attentions", "decoder_hidden_states", "past_key_values")


class GenerateBeamEncoderDecoderOutput(_CacheAlias, ModelOutput):
    _fields = ("sequences", "sequences_scores", "scores", "logits", "beam_indices", "encoder_attentions",
               "encoder_hidden_states", "decoder_attentions", "cross_attentions", "decoder_hidden_states",
               "past_key_values")


def _stack_outputs(outputs, to):
    """transformers' _stack_split_outputs: the rows' outputs of one generate call stacked again; a plain dict
    when they hold token times."""
    stacked = {}
    for key, value in outputs[0].items():
        if key in ("scores", "logits"):
            stacked[key] = tuple(to(np.stack([o[key][i] for o in outputs])) for i in range(len(value)))
        else:
            stacked[key] = to(np.stack([o[key] for o in outputs]))
    if "token_timestamps" in stacked:
        return stacked
    cls = GenerateBeamEncoderDecoderOutput if "beam_indices" in stacked else GenerateEncoderDecoderOutput
    return cls(**stacked)


def _segments_as_kind(segments, to):
    """Each row's segment dicts with their arrays as the caller's kind of tensor; the segments of one window
    share one converted `result`, as in transformers."""
    converted = {}

    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, (np.ndarray, np.generic)):
            value = np.asarray(value)
            return to(value) if value.ndim else to(value.reshape(1)).reshape(())  # a scalar stays 0-d
        return value

    def result(value):
        if id(value) not in converted:
            converted[id(value)] = convert(value)
        return converted[id(value)]

    return [[{key: result(value) if key == "result" else convert(value) for key, value in segment.items()}
             for segment in row] for row in segments]
