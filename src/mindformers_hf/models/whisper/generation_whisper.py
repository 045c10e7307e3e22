"""Whisper's `generate` (transformers' WhisperGenerationMixin): one 30 s window, or the seek over windows of
long-form audio, each decoded with transformers' temperature fallback.

The decoder prompt is built from `generation_config.json` as transformers builds it: decoder_start_token_id,
then the language token (from `language=`, the old `forced_decoder_ids`, or detected from the audio), the task
token (`task=`) and <|notimestamps|>. `suppress_tokens` apply at every step, `begin_suppress_tokens` at the first
generated position. The encoder runs once; Seq2SeqRunner feeds the decoder to the shared greedy / sampling /
beam-search loops of generation/utils.py (prompt first, then one token per step through the
EncoderDecoderCache, whose cross-attention keys/values are computed once). As in transformers 5, the returned sequences
hold the generated tokens only: the prompt and a final end-of-text are removed, rows are right-padded with
pad_token_id. `prompt_ids` and `condition_on_prev_tokens` put text before the init tokens
(<|startofprev|> ...), as transformers' _prepare_decoder_input_ids does. `return_token_timestamps` adds each
token's time from the alignment heads' cross-attention (token_timestamps.py). `return_segments` /
`return_dict_in_generate` return transformers' structures: the segment dicts of each row (split at timestamp
pairs, with their window's output as `result`), or the last window's outputs as a Generate*EncoderDecoderOutput.
"""
import copy
import math
import zlib

import numpy as np
import mindspore as ms
from mindspore import ops

from ... import tensor_io
from ...generation import logits_process as lp
from ...generation.utils import _as_kind, _as_list
from ...utils import warn_once
from . import token_timestamps
from .segments import _retrieve_segments, _row_output, _segments_as_kind, _stack_outputs


class Seq2SeqRunner:
    """The runner interface generation/utils.py's loops drive (prefill, step, expand, reorder), for an
    encoder-decoder model: the encoder output is computed once by the caller; the decoder prompt is prefilled,
    then one token per step through the EncoderDecoderCache."""

    compiled = False

    def __init__(self, model, encoder_hidden):
        self.model, self.hidden, self.cache = model, encoder_hidden, None

    def _decode(self, ids, attention_mask):
        masked = {}
        if attention_mask is not None and not attention_mask.all():
            # transformers' Whisper prepare_inputs_for_generation: positions count the unmasked tokens only
            positions = np.where(attention_mask == 0, 0, np.cumsum(attention_mask, -1) - 1)[:, -ids.shape[1]:]
            masked = dict(decoder_attention_mask=ms.Tensor(attention_mask.astype(np.int64)),
                          decoder_position_ids=ms.Tensor(positions.astype(np.int32)))
        out = self.model(encoder_outputs=(self.hidden,), decoder_input_ids=ms.Tensor(ids.astype(np.int64)),
                         past_key_values=self.cache, use_cache=True, **masked)
        self.cache = out.past_key_values
        return out.logits[:, -1].astype(ms.float32).asnumpy()

    def prefill(self, input_ids, attention_mask):
        self.cache = None
        return self._decode(input_ids, attention_mask)

    def step(self, tokens, attention_mask):
        return self._decode(tokens.reshape(-1, 1), attention_mask)

    def expand(self, repeats):
        if repeats > 1:
            self.reorder(np.repeat(np.arange(self.hidden.shape[0]), repeats))

    def reorder(self, rows):
        rows = ms.Tensor(np.asarray(rows, np.int32))
        self.cache.reorder_cache(rows)
        self.hidden = ops.gather(self.hidden, rows, 0)

    def close(self):
        pass


def _language_codes():
    # transformers' tables (they import without torch)
    from transformers.models.whisper.tokenization_whisper import TASK_IDS, TO_LANGUAGE_CODE

    return TO_LANGUAGE_CODE, TASK_IDS


def _pad_right(rows, pad):
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), pad if pad is not None else 0, np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


class WhisperTimeStampLogitsProcessor(lp.LogitsProcessor):
    """transformers' WhisperTimeStampLogitsProcessor in numpy: timestamps come in pairs (except right before
    the end of text) and never decrease; the first generated token is a timestamp (at most
    `max_initial_timestamp_index`); a timestamp is forced when their total probability beats every text token."""

    def __init__(self, generate_config, begin_index, _detect_timestamp_from_logprob=None):
        self.no_timestamps_token_id = generate_config.no_timestamps_token_id
        self.timestamp_begin = generate_config.no_timestamps_token_id + 1
        eos = generate_config.eos_token_id or generate_config.bos_token_id
        self.eos_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
        self._detect_timestamp_from_logprob = (_detect_timestamp_from_logprob
                                               if _detect_timestamp_from_logprob is not None
                                               else getattr(generate_config, "_detect_timestamp_from_logprob", True))
        self.begin_index = begin_index
        self.max_initial_timestamp_index = getattr(generate_config, "max_initial_timestamp_index", None)

    def set_begin_index(self, begin_index):
        self.begin_index = begin_index

    def process(self, input_ids, scores):
        begin = self.timestamp_begin
        scores[:, self.no_timestamps_token_id] = -np.inf
        vocab = np.arange(scores.shape[-1])
        for k, seq in enumerate(input_ids[:, self.begin_index:]):
            last = len(seq) >= 1 and seq[-1] >= begin
            penultimate = len(seq) < 2 or seq[-2] >= begin
            if last:
                if penultimate:  # has to be text
                    scores[k, begin:] = -np.inf
                else:  # cannot be text
                    scores[k, :self.eos_token_id] = -np.inf
            stamps = seq[seq >= begin]
            lowest = begin if not len(stamps) else (stamps[-1] if last and not penultimate else stamps[-1] + 1)
            scores[k, (vocab >= begin) & (vocab < lowest)] = -np.inf
        if input_ids.shape[1] == self.begin_index:
            scores[:, :begin] = -np.inf
            if self.max_initial_timestamp_index is not None:
                scores[:, begin + self.max_initial_timestamp_index + 1:] = -np.inf
        if self._detect_timestamp_from_logprob:
            with np.errstate(divide="ignore", invalid="ignore"):
                logprobs = scores - _logsumexp(scores)
                stamp = _logsumexp(logprobs[:, begin:])[:, 0] > logprobs[:, :begin].max(-1)
            scores[stamp, :begin] = -np.inf
        return scores


def _logsumexp(x):
    """log(sum(exp(x))) over the last axis, keepdims; -inf rows stay -inf (as torch's logsumexp)."""
    top = x.max(-1, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.exp(x - safe).sum(-1, keepdims=True)) + safe


def _set_temperature(config, temperature):
    """transformers' Whisper samples only at a positive temperature (do_sample is overridden), with one beam."""
    config.do_sample = temperature is not None and temperature > 0.0
    config.temperature = temperature if config.do_sample else 1.0
    if config.do_sample:
        config.num_beams = 1


def _compression_ratio(tokens, vocab_size):
    """transformers' _retrieve_compression_ratio: raw token bytes over their zlib-compressed length."""
    width = int(math.log2(vocab_size) / 8) + 1
    raw = b"".join(int(t).to_bytes(width, "little") for t in tokens)
    return len(raw) / len(zlib.compress(raw))


def _average_logprob(scores, tokens, temperature):
    """transformers' _retrieve_avg_logprobs: the mean log-probability of the window's tokens (end-of-text
    included) under the processed scores, undoing the temperature."""
    scores = np.stack(scores).astype(np.float64) * (temperature if temperature and temperature > 0.0 else 1)
    if scores.shape[0] > len(tokens):
        scores = scores[:len(tokens)]
    else:
        tokens = tokens[-scores.shape[0]:]
    with np.errstate(invalid="ignore"):
        logprobs = scores - _logsumexp(scores)
    return float(logprobs[np.arange(len(tokens)), tokens].sum() / len(tokens))


class WhisperGenerationMixin:
    def generate(self, input_features=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 prefix_allowed_tokens_fn=None, synced_gpus=False, return_timestamps=None, task=None, language=None,
                 is_multilingual=None, prompt_ids=None, prompt_condition_type=None, condition_on_prev_tokens=None,
                 temperature=None, compression_ratio_threshold=None, logprob_threshold=None,
                 no_speech_threshold=None, num_segment_frames=None, attention_mask=None, time_precision=0.02,
                 time_precision_features=0.01, return_token_timestamps=None, return_segments=False,
                 return_dict_in_generate=None, force_unique_generate_call=None, monitor_progress=None, **kwargs):
        unsupported = {"prefix_allowed_tokens_fn": prefix_allowed_tokens_fn,
                       "assistant_model": kwargs.get("assistant_model"),
                       "decoder_input_ids": kwargs.get("decoder_input_ids")}
        for name, value in unsupported.items():
            if value is not None:
                raise NotImplementedError(f"Whisper generate: {name} is not supported")
        if synced_gpus:
            warn_once("Whisper generate: synced_gpus is accepted for compatibility and ignored")
        if input_features is None:
            input_features = kwargs.pop("inputs", None)
        if kwargs.pop("encoder_outputs", None) is not None:
            raise NotImplementedError("Whisper generate: encoder_outputs is not supported; pass input_features")
        config, model_kwargs, _ = self._prepare_generation_config(generation_config, kwargs)
        if config.output_hidden_states:
            raise NotImplementedError("Whisper generate: output_hidden_states=True is not supported")
        if (config.num_return_sequences or 1) > 1:
            raise NotImplementedError("Whisper generate: num_return_sequences > 1 is not supported")
        # transformers' _set_return_outputs: token timestamps (and the logprob threshold, below) need the
        # per-window outputs as dicts with their scores
        if return_dict_in_generate is None:
            return_dict_in_generate = bool(config.return_dict_in_generate)
        else:
            config.return_dict_in_generate = return_dict_in_generate
        if return_token_timestamps:
            config.return_dict_in_generate = config.output_scores = True
        if force_unique_generate_call is None:
            force_unique_generate_call = bool(getattr(config, "force_unique_generate_call", False))
        # transformers' Whisper: a list of temperatures is the fallback order, tried while a window's output
        # fails the thresholds; do_sample is overridden (it samples only at a positive temperature)
        temperatures = list(temperature) if isinstance(temperature, (list, tuple)) else [temperature]
        _set_temperature(config, temperatures[0])
        self._set_thresholds_and_condition(config, logprob_threshold, compression_ratio_threshold,
                                           no_speech_threshold, condition_on_prev_tokens, prompt_condition_type)
        if config.logprob_threshold is not None:
            if config.num_beams > 1:
                raise NotImplementedError("Whisper generate: logprob_threshold with beam search is not supported")
            # the window's average log-probability is read from its scores
            config.return_dict_in_generate = config.output_scores = True
        for key in model_kwargs:
            warn_once(f"Whisper generate: keyword {key!r} is accepted for compatibility and ignored")
        if input_features is None:
            raise ValueError("Whisper generate needs input_features")
        num_frames = self._set_num_frames(bool(return_token_timestamps), config, attention_mask,
                                          tensor_io.to_numpy(input_features).shape[0])
        kind = tensor_io.kind_of(input_features) or tensor_io.MINDSPORE
        feats = np.asarray(tensor_io.to_numpy(input_features), np.float32)
        batch, frames = feats.shape[0], feats.shape[-1]
        prompt = None
        if prompt_ids is not None:
            prompt = np.asarray(tensor_io.to_numpy(prompt_ids) if tensor_io.kind_of(prompt_ids) else prompt_ids,
                                np.int64).reshape(-1)

        # -- one 30 s window (short-form) or the long-form seek over windows
        stride = self.model.encoder.conv1.stride * self.model.encoder.conv2.stride
        window = stride * self.config.max_source_positions
        shortform = frames <= window
        if batch > 1 and not shortform:
            if attention_mask is None:
                raise ValueError("When doing batched long-form audio transcription, make sure to pass an "
                                 "`attention_mask`. You can retrieve the `attention_mask` by doing "
                                 "`processor(audio, ..., return_attention_mask=True)` ")
            max_frames = np.asarray(tensor_io.to_numpy(attention_mask)).sum(-1).astype(np.int64)
        else:
            max_frames = np.full(batch, frames, np.int64)
        timestamp_begin = self._set_return_timestamps(return_timestamps, shortform, config)
        self._set_language_and_task(language, task, is_multilingual, config)
        init = self._retrieve_init_tokens(lambda: self._encode(feats[:, :, :window], window), batch, config)

        # -- processors: transformers prepends Whisper's (begin-suppress, suppress, timestamps) to the caller's;
        # their begin index moves to each window's decoder prompt length
        whisper_processors = []
        if config.begin_suppress_tokens is not None:
            whisper_processors.append(lp.SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens,
                                                                              init.shape[1]))
        suppress_tokens = config.suppress_tokens
        if suppress_tokens is not None:
            whisper_processors.append(lp.SuppressTokensLogitsProcessor(suppress_tokens))
        if config.return_timestamps:
            whisper_processors.append(WhisperTimeStampLogitsProcessor(config, init.shape[1]))
        config.suppress_tokens = config.begin_suppress_tokens = None
        custom = whisper_processors + list(logits_processor or [])
        eos = _as_list(config.eos_token_id)
        pad = config.pad_token_id
        pad = int(_as_list(pad)[0]) if pad is not None else (eos[0] if eos else None)
        prev_sot = getattr(config, "prev_sot_token_id", None)
        if prev_sot is None and suppress_tokens is not None and len(suppress_tokens) >= 2:
            prev_sot = int(list(suppress_tokens)[-2])  # transformers' fallback for old generation configs
        first_segment = prompt is not None and config.prompt_condition_type == "first-segment"

        seek = np.zeros(batch, np.int64)
        segments = [[] for _ in range(batch)]  # per row: transformers' segment dicts
        if first_segment:  # the prompt is the first "segment": previous text for conditioning, dropped at the end
            tail = prompt[1:] if prev_sot is not None and prompt[0] == prev_sot else prompt
            segments = [[{"tokens": tail}] for _ in range(batch)]
        condition = [bool(config.condition_on_prev_tokens)] * batch
        outputs = None
        while (seek < max_frames).any():
            if monitor_progress is not None:  # transformers': [B, 2] (frames done, frames in all) per audio
                monitor_progress(_as_kind(np.stack((seek, max_frames), 1), kind))
            rows = np.flatnonzero(seek < max_frames)
            time_offset = seek.astype(np.float64) * time_precision / stride
            seek_frames = np.minimum(max_frames[rows] - seek[rows], window)
            segment = np.zeros((len(rows), feats.shape[1], window), np.float32)  # padded to 30 s
            for i, row in enumerate(rows):
                segment[i, :, :seek_frames[i]] = feats[row, :, seek[row]:seek[row] + seek_frames[i]]
            hidden = self._encode(segment, window)
            ids, mask = self._decoder_prompt(init[rows], rows, segments, condition, prompt, prev_sot, config, pad,
                                             timestamp_begin)
            self._set_max_length(config, ids.shape[1])
            for proc in custom:
                if hasattr(proc, "set_begin_index"):
                    proc.set_begin_index(ids.shape[1])
            no_speech = None
            if config.no_speech_threshold is not None:
                no_speech = self._no_speech_probs(hidden, ids, mask, init.shape[1], config)
            frames_left = None if num_frames is None else num_frames[rows] - seek[rows]
            tokens, skip, outputs = self._generate_with_fallback(hidden, ids, mask, rows, temperatures, config, custom,
                                                                 stopping_criteria, pad, eos, no_speech, condition,
                                                                 frames_left)
            for i, row in enumerate(rows):
                if skip[i]:  # no speech in this window: transformers drops it and seeks past it
                    seek[row] += seek_frames[i]
                    continue
                pieces, offset = _retrieve_segments(tokens[i], timestamp_begin, int(seek_frames[i]), stride,
                                                    time_offset[row], time_precision, time_precision_features,
                                                    ids.shape[1])
                for piece in pieces:
                    piece["result"] = outputs[i]
                    if return_token_timestamps:  # the piece's times, by its positions in the window's sequence
                        start, end = piece["idxs"]
                        # float32, as torch adds the float64 offset to the float32 times
                        piece["token_timestamps"] = outputs[i]["token_timestamps"][start:end] + \
                            np.float32(time_offset[row])
                segments[row] += pieces
                seek[row] += offset
            if force_unique_generate_call:
                break
        if first_segment:
            segments = [rows[1:] for rows in segments]
        to = lambda a: _as_kind(a, kind)  # noqa: E731
        if return_dict_in_generate and config.return_dict_in_generate and \
                (force_unique_generate_call or not return_timestamps):
            # transformers returns the outputs of the last generate call (one window), stacked over its rows
            return _stack_outputs(outputs, to)
        if force_unique_generate_call:  # transformers' _pad_to_max_length: each row's whole first call
            results = [row[0]["result"] for row in segments]
            sequences = to(np.stack([r["sequences"] if isinstance(r, dict) else r for r in results]))
            times = np.stack([r["token_timestamps"] for r in results]) if return_token_timestamps else None
        else:
            sequences = to(_pad_right([np.concatenate([p["tokens"] for p in row]) if row else np.zeros(0, np.int64)
                                       for row in segments], pad))
            times = None
            if return_token_timestamps:
                # transformers' _pad_to_max_length: the window times without the window offsets, rows padded with
                # their last time
                times = [np.concatenate([p["result"]["token_timestamps"][slice(*p["idxs"])] for p in row])
                         .astype(np.float32) if row else np.zeros(0, np.float32) for row in segments]
                width = max(len(r) for r in times)
                times = np.stack([np.pad(r, (0, width - len(r)), constant_values=r[-1] if len(r) else 0.0)
                                  for r in times])
        if return_dict_in_generate and config.return_dict_in_generate:
            warn_once("You have passed `return_dict_in_generate=True` and `return_timestamps=True`, this "
                      "automatically sets `return_segments=True` to access the results of the underlying calls to "
                      "GenerationMixin's generate in the returned `segments`.")
            return_segments = True
        elif not return_segments and not return_token_timestamps:
            return sequences
        result = {"sequences": sequences}
        if return_token_timestamps:
            result["token_timestamps"] = to(times)
        if return_segments:
            result["segments"] = _segments_as_kind(segments, to)
        return result

    # ------------------------------------------------------------------ one window, with the temperature fallback
    def _generate_with_fallback(self, hidden, ids, mask, rows, temperatures, config, custom, stopping_criteria, pad,
                                eos, no_speech, condition, frames_left=None):
        """transformers' generate_with_fallback: decode the window at each temperature in turn, again only for the
        rows whose output fails a threshold (compression ratio, average log-probability); a row whose no-speech
        probability is over its threshold while its log-probability is under is skipped. Returns each row's
        tokens (padding and end-of-text removed), the skip flags and each row's output of its last attempt
        (transformers' seek_outputs: the row's whole sequence, prompt included, or with return_dict_in_generate
        a dict of it with its scores, logits, beam indices and token times)."""
        begin = ids.shape[1]
        tokens, skip, outputs = [None] * len(rows), [False] * len(rows), [None] * len(rows)
        todo = np.arange(len(rows))
        for attempt, temperature in enumerate(temperatures):
            _set_temperature(config, temperature)
            processors = self._logits_processors(config, begin, eos, custom, mask[todo])
            criteria = self._stopping_criteria(config, eos, None, stopping_criteria)
            todo_hidden = ops.gather(hidden, ms.Tensor(todo.astype(np.int32)), 0) if len(todo) < len(rows) else hidden
            runner = Seq2SeqRunner(self, todo_hidden)
            if config.num_beams > 1:
                result = self._beam_search(runner, ids[todo], mask[todo], config, processors, criteria, pad, eos)
            else:
                result = self._sample_loop(runner, ids[todo], mask[todo], config, processors, criteria, pad, eos,
                                           None)
            window_times = None
            if config.return_token_timestamps:
                # transformers indexes the window's frames by position in the call's batch
                window_times = self._token_timestamps(todo_hidden, result["sequences"], mask[todo], config,
                                                      frames_left)
            again = []
            for j, i in enumerate(todo):
                outputs[i] = _row_output(result, j, config, None if window_times is None else window_times[j])
                row = self._strip_padding(result["sequences"][j, begin:], pad, eos)
                scores = outputs[i]["scores"] if config.logprob_threshold is not None else None
                fallback, skip[i] = self._need_fallback(row, scores, None if no_speech is None else no_speech[i],
                                                        config, temperature)
                tokens[i] = row[:-1] if eos and len(row) and row[-1] in eos else row
                condition[rows[i]] = bool(config.condition_on_prev_tokens) and (temperature is None or
                                                                                temperature < 0.5)
                if fallback:
                    again.append(i)
            todo = np.asarray(again, np.int64)
            if not len(todo) or attempt == len(temperatures) - 1:
                break
        return tokens, skip, outputs

    def _token_timestamps(self, hidden, sequences, prompt_mask, config, frames):
        """transformers' _extract_token_timestamps for one generate call: [n, S] float32 times."""
        sequences = np.asarray(sequences)
        mask = np.concatenate([prompt_mask, np.ones((len(sequences), sequences.shape[1] - prompt_mask.shape[1]),
                                                    prompt_mask.dtype)], 1)
        weights = token_timestamps.alignment_probs(self, hidden, sequences, mask, config.alignment_heads)
        return token_timestamps.extract_token_timestamps(weights, prompt_mask.shape[1], frames,
                                                         self.config.median_filter_width)

    @staticmethod
    def _set_num_frames(return_token_timestamps, config, attention_mask, batch):
        """transformers' _set_num_frames: the mel frames of each row (from attention_mask) that token timestamps
        align to, or None (all of them)."""
        config.return_token_timestamps = return_token_timestamps
        if not return_token_timestamps:
            return None
        if not hasattr(config, "alignment_heads"):
            raise ValueError("Model generation config has no `alignment_heads`, token-level timestamps not available. "
                             "See https://gist.github.com/hollance/42e32852f24243b748ae6bc1f985b13a on how to add "
                             "this property to the generation config.")
        if config.num_beams > 1 and batch > 1:
            raise NotImplementedError("Whisper generate: return_token_timestamps with beam search is supported for "
                                      "one audio at a time (transformers gathers other rows' times from beam 0)")
        if attention_mask is None:
            warn_once("When setting `return_token_timestamps` to `True`, make sure to pass an `attention_mask` to get "
                      "precise token-level timestamps. You can retrieve the `attention_mask` by doing "
                      "`processor(audio, ..., return_attention_mask=True)` ")
            return None
        return np.asarray(tensor_io.to_numpy(attention_mask)).sum(-1).astype(np.int64)

    def _need_fallback(self, tokens, scores, no_speech_prob, config, temperature):
        """transformers' _need_fallback: (needs another temperature, skip the window as silence)."""
        fallback, logprob = False, None
        if config.compression_ratio_threshold is not None:
            fallback |= _compression_ratio(tokens, self.config.vocab_size) > config.compression_ratio_threshold
        if config.logprob_threshold is not None:
            logprob = _average_logprob(scores, tokens, temperature)
            fallback |= logprob < config.logprob_threshold
        if no_speech_prob is not None and logprob < config.logprob_threshold \
                and no_speech_prob > config.no_speech_threshold:
            return False, True
        return bool(fallback), False

    def _no_speech_probs(self, hidden, ids, mask, init_len, config):
        """transformers' WhisperNoSpeechDetection: the probability of <|nospeech|> (the id before
        <|notimestamps|>) after the start-of-transcript token, from the raw logits."""
        masked = {}
        if not mask.all():
            positions = np.where(mask == 0, 0, np.cumsum(mask, -1) - 1)
            masked = dict(decoder_attention_mask=ms.Tensor(mask.astype(np.int64)),
                          decoder_position_ids=ms.Tensor(positions.astype(np.int32)))
        logits = self(encoder_outputs=(hidden,), decoder_input_ids=ms.Tensor(ids), use_cache=False, **masked).logits
        logits = logits[:, ids.shape[1] - init_len].astype(ms.float32).asnumpy().astype(np.float64)
        probs = np.exp(logits - _logsumexp(logits))
        return probs[:, config.no_timestamps_token_id - 1]

    def _decoder_prompt(self, init, rows, segments, condition, prompt, prev_sot, config, pad, timestamp_begin):
        """transformers' _prepare_decoder_input_ids: the init tokens, after the previous windows' text
        (condition_on_prev_tokens: at most max_target_positions // 2 - 1 tokens after <|startofprev|>, rows
        left-padded, padding masked) or after `prompt_ids`. Returns (ids [B, P], mask [B, P])."""
        if any(condition) and len(segments[0]) > 0:
            cut = self.config.max_target_positions // 2 - 1
            if prompt is not None and config.prompt_condition_type == "all-segments":
                start = prompt
            else:
                start = np.asarray([prev_sot] if prev_sot is not None else [], np.int64)
            prefixes = []
            for row in rows:
                previous = np.zeros(0, np.int64)
                if condition[row] and segments[row]:
                    pieces = [p["tokens"] for p in segments[row]]
                    pieces = [p[:-1] if len(p) > 2 and p[-2] >= timestamp_begin else p for p in pieces]
                    previous = np.concatenate(pieces)[-cut:]
                prefixes.append(np.concatenate([start, previous]).astype(np.int64))
            width = max(len(p) for p in prefixes)
            prefix = np.stack([np.concatenate([np.full(width - len(p), pad, np.int64), p]) for p in prefixes])
            ids = np.concatenate([prefix, init], 1)
            return ids, (ids != pad).astype(np.int64)
        if prompt is not None:
            ids = np.concatenate([np.repeat(prompt[None], len(init), 0), init], 1)
        else:
            ids = init
        return ids, np.ones_like(ids)

    @staticmethod
    def _set_thresholds_and_condition(config, logprob_threshold, compression_ratio_threshold, no_speech_threshold,
                                      condition_on_prev_tokens, prompt_condition_type):
        for name, value in (("logprob_threshold", logprob_threshold),
                            ("compression_ratio_threshold", compression_ratio_threshold),
                            ("no_speech_threshold", no_speech_threshold),
                            ("condition_on_prev_tokens", condition_on_prev_tokens)):
            setattr(config, name, value if value is not None else getattr(config, name, None))
        if config.no_speech_threshold is not None and config.logprob_threshold is None:
            raise ValueError("Whisper generate: no_speech_threshold needs logprob_threshold (a window is skipped as "
                             "silence only when both say so)")
        allowed = ["first-segment", "all-segments"]
        prompt_condition_type = prompt_condition_type or allowed[0]
        if prompt_condition_type not in allowed:
            raise ValueError(f"`prompt_condition_type={prompt_condition_type} does not exist. Make sure to set "
                             f"`prompt_condition_type` to one of {', '.join(allowed)}")
        if config.condition_on_prev_tokens is not True and prompt_condition_type == "all-segments":
            raise ValueError("Make sure to set `condition_on_prev_tokens=True` when setting "
                             "`prompt_condition_type='all-segments'`.")
        config.prompt_condition_type = prompt_condition_type

    @staticmethod
    def _strip_padding(row, pad, eos):
        """transformers' generate_with_fallback: drop the padding (every pad token, as it counts them) but keep
        a final end-of-text, which counts in the average log-probability."""
        if pad is not None and len(row) and row[-1] == pad:
            count = int((row == pad).sum()) - (1 if pad in eos else 0)
            if count:
                row = row[:-count]
        return row

    def _encode(self, feats, window):
        if feats.shape[-1] < window:  # transformers pads each window to 30 s
            feats = np.pad(feats, ((0, 0), (0, 0), (0, window - feats.shape[-1])))
        return self.model.encoder(ms.Tensor(feats)).last_hidden_state

    def _set_max_length(self, config, prompt_len):
        """transformers' _set_max_new_tokens_and_length, then the generic rule (run per window: as there, a
        max_length without max_new_tokens grows by the prompt length each window, up to max_target_positions)."""
        max_target = self.config.max_target_positions
        if config.max_new_tokens is not None:
            if config.max_new_tokens + prompt_len > max_target:
                raise ValueError(f"The length of `decoder_input_ids`, including special start tokens, is "
                                 f"{prompt_len}, and `max_new_tokens` is {config.max_new_tokens}: together they "
                                 f"exceed the `max_target_positions` of the Whisper model: {max_target}.")
            config.max_length = config.max_new_tokens + prompt_len
        else:
            config.max_length = min(config.max_length + min(max_target // 2 - 1, prompt_len), max_target)
        if prompt_len >= config.max_length:
            raise ValueError(f"Input length of decoder_input_ids is {prompt_len}, but `max_length` is set to "
                             f"{config.max_length}. Set `max_new_tokens` or increase `max_length`.")

    # ------------------------------------------------------------------ the decoder prompt
    def _set_return_timestamps(self, return_timestamps, shortform, config):
        if return_timestamps is None:
            return_timestamps = getattr(config, "return_timestamps", None)
        if not shortform:
            if return_timestamps is False:
                raise ValueError("You have passed more than 3000 mel input features (> 30 seconds) which "
                                 "automatically enables long-form generation which requires the model to predict "
                                 "timestamp tokens. Please either pass `return_timestamps=True` or make sure to pass "
                                 "no more than 3000 mel input features.")
            return_timestamps = True
        if return_timestamps and not hasattr(config, "no_timestamps_token_id"):
            raise ValueError("You are trying to return timestamps, but the generation config is not properly set. "
                             "Make sure to initialize the generation config with the correct attributes that are "
                             "needed such as `no_timestamps_token_id`.")
        config.return_timestamps = return_timestamps
        no_timestamps = getattr(config, "no_timestamps_token_id", None)
        return no_timestamps + 1 if no_timestamps is not None else self.config.vocab_size + 1

    @staticmethod
    def _set_language_and_task(language, task, is_multilingual, config):
        if is_multilingual is not None:
            if not hasattr(config, "is_multilingual"):
                raise ValueError("The generation config is outdated and is thus not compatible with the "
                                 "`is_multilingual` argument to `generate`. Please update the generation config.")
            config.is_multilingual = is_multilingual
        if hasattr(config, "is_multilingual") and not config.is_multilingual and (task or language) is not None:
            raise ValueError("Cannot specify `task` or `language` for an English-only model. If the model is "
                             "intended to be multilingual, pass `is_multilingual=True` to generate, or update the "
                             "generation config.")
        for name, value, table in (("language", language, "lang_to_id"), ("task", task, "task_to_id")):
            if value is not None:
                if not hasattr(config, table):
                    raise ValueError(f"The generation config is outdated and is thus not compatible with the "
                                     f"`{name}` argument to `generate`: it has no `{table}`.")
                setattr(config, name, value)

    def _language_id(self, language, config):
        to_code, _ = _language_codes()
        language = language.lower()
        if language in config.lang_to_id:
            token = language
        elif language in to_code:
            token = f"<|{to_code[language]}|>"
        elif language in to_code.values():
            token = f"<|{language}|>"
        else:
            valid = list(to_code.values()) if len(language) == 2 else list(to_code.keys())
            raise ValueError(f"Unsupported language: {language}. Language should be one of: {valid}.")
        if token not in config.lang_to_id:
            raise ValueError(f"{token} is not supported by this specific model as it is not in the "
                             "`generation_config.lang_to_id`. (You should just add it to the generation config)")
        return config.lang_to_id[token]

    def detect_language(self, input_features=None, encoder_outputs=None, generation_config=None,
                        num_segment_frames=3000):
        """The most likely language token after decoder_start_token_id, among `lang_to_id`'s, per row."""
        if (input_features is None) == (encoder_outputs is None):
            raise ValueError("Make sure to specify exactly one of `input_features` or `encoder_outputs`")
        config = generation_config or self.generation_config
        if input_features is not None:
            feats = np.asarray(tensor_io.to_numpy(input_features), np.float32)[:, :, :num_segment_frames]
            hidden = self.model.encoder(ms.Tensor(feats)).last_hidden_state
        else:
            hidden = tensor_io.to_mindspore(encoder_outputs[0])
        return self._detect_language(hidden, config)

    def _detect_language(self, hidden, config):
        start = np.full((hidden.shape[0], 1), config.decoder_start_token_id, np.int64)
        logits = self(encoder_outputs=(hidden,), decoder_input_ids=ms.Tensor(start), use_cache=False)
        logits = logits.logits[:, -1].asnumpy()
        allowed = np.full(logits.shape[-1], -np.inf, np.float32)
        allowed[list(config.lang_to_id.values())] = 0.0
        return (logits + allowed).argmax(-1)

    def _retrieve_init_tokens(self, encode_first_window, batch, config):
        """transformers' _retrieve_init_tokens: [B, P] decoder prompt. The language is detected on the first
        window's encoder output (`encode_first_window()`), only when needed."""
        _, task_ids = _language_codes()
        task, language = getattr(config, "task", None), getattr(config, "language", None)
        init = [config.decoder_start_token_id]
        if task is None and language is None:
            forced = getattr(config, "forced_decoder_ids", None)
            if forced is None:
                forced = getattr(self.config, "forced_decoder_ids", None)
            if forced is not None and forced[0][0] == 1:  # the deprecated form: [[1, lang], [2, task], ...]
                forced = [list(pair) for pair in forced]
                position = 1
                while forced and forced[0][0] == position:
                    init.append(forced.pop(0)[1])
                    position += 1
                if forced:
                    raise ValueError(f"You are using token ids in `forced_decoder_ids` that do not seem to correctly "
                                     f"follow the prompt pattern of Whisper: {forced}.")
        lang_undefined = len(init) <= 1 or init[1] is None
        if isinstance(language, (list, tuple)):
            if any(item is None for item in language):
                raise TypeError("Expected `language` to be `None`, a single string (e.g. `'en'`), or a list of "
                                "strings with length equal to the batch size. Got a list containing `None`.")
            if len(language) != batch:
                raise ValueError(f"When passing a list of languages, the length of the list must match the batch "
                                 f"size. Expected length of {batch}, but got {len(language)} languages.")
            languages = list(language)
        else:
            languages = [language] * batch
        rows = [copy.copy(init) for _ in range(batch)]
        lang_ids = None
        if language is not None:
            lang_ids = [self._language_id(item, config) for item in languages]
        elif hasattr(config, "lang_to_id") and lang_undefined:
            lang_ids = self._detect_language(encode_first_window(), config).tolist()
        for i, row in enumerate(rows):
            if lang_ids is not None:
                if len(row) > 1:
                    row[1] = lang_ids[i]
                else:
                    row.append(lang_ids[i])
            if task is not None:
                if task not in task_ids:
                    raise ValueError(f"The `{task}` task is not supported. The task should be one of `{task_ids}`")
                task_id = config.task_to_id[task]
                row.append(task_id)
                # transformers' replace_or_add: its result is discarded, so the row keeps the appended id
            elif language is not None and hasattr(config, "task_to_id"):
                if not any(t in row for t in config.task_to_id.values()):
                    row.append(config.task_to_id["transcribe"])
            no_timestamps = getattr(config, "no_timestamps_token_id", None)
            if not config.return_timestamps and no_timestamps is not None and row[-1] != no_timestamps:
                row.append(no_timestamps)
            elif config.return_timestamps and row[-1] == no_timestamps:
                row.pop()
            rows[i] = [t for t in row if t is not None]
        if len({len(r) for r in rows}) > 1:
            raise ValueError(f"Whisper generate: decoder prompts of different lengths in one batch: {rows}")
        return np.asarray(rows, np.int64)
