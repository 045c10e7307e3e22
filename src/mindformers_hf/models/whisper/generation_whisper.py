"""Whisper's `generate` (transformers' WhisperGenerationMixin) for short-form audio (up to 30 s).

The decoder prompt is built from `generation_config.json` as transformers builds it: decoder_start_token_id,
then the language token (from `language=`, the old `forced_decoder_ids`, or detected from the audio), the task
token (`task=`) and <|notimestamps|>. `suppress_tokens` apply at every step, `begin_suppress_tokens` at the first
generated position. The encoder runs once; Seq2SeqRunner feeds the decoder to the shared greedy / sampling /
beam-search loops of generation/utils.py (prompt first, then one token per step through the
EncoderDecoderCache, whose cross-attention keys/values are computed once). As in transformers 5, the returned sequences
hold the generated tokens only: the prompt and a final end-of-text are removed, rows are right-padded with
pad_token_id.
"""
import copy

import numpy as np
import mindspore as ms
from mindspore import ops

from ... import tensor_io
from ...generation import logits_process as lp
from ...generation.utils import _as_kind, _as_list
from ...utils import warn_once


class Seq2SeqRunner:
    """The runner interface generation/utils.py's loops drive (prefill, step, expand, reorder), for an
    encoder-decoder model: the encoder output is computed once by the caller; the decoder prompt is prefilled,
    then one token per step through the EncoderDecoderCache."""

    compiled = False

    def __init__(self, model, encoder_hidden):
        self.model, self.hidden, self.cache = model, encoder_hidden, None

    def _decode(self, ids):
        out = self.model(encoder_outputs=(self.hidden,), decoder_input_ids=ms.Tensor(ids.astype(np.int64)),
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].astype(ms.float32).asnumpy()

    def prefill(self, input_ids, attention_mask):
        self.cache = None
        return self._decode(input_ids)

    def step(self, tokens, attention_mask):
        return self._decode(tokens.reshape(-1, 1))

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


class WhisperGenerationMixin:
    def generate(self, input_features=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 prefix_allowed_tokens_fn=None, synced_gpus=False, return_timestamps=None, task=None, language=None,
                 is_multilingual=None, prompt_ids=None, prompt_condition_type=None, condition_on_prev_tokens=None,
                 temperature=None, compression_ratio_threshold=None, logprob_threshold=None,
                 no_speech_threshold=None, num_segment_frames=None, attention_mask=None, time_precision=0.02,
                 time_precision_features=0.01, return_token_timestamps=None, return_segments=False,
                 return_dict_in_generate=None, force_unique_generate_call=None, monitor_progress=None, **kwargs):
        unsupported = {"prefix_allowed_tokens_fn": prefix_allowed_tokens_fn, "prompt_ids": prompt_ids,
                       "condition_on_prev_tokens": condition_on_prev_tokens or None,
                       "compression_ratio_threshold": compression_ratio_threshold,
                       "logprob_threshold": logprob_threshold, "no_speech_threshold": no_speech_threshold,
                       "return_token_timestamps": return_token_timestamps or None,
                       "return_segments": return_segments or None,
                       "return_dict_in_generate": return_dict_in_generate or None,
                       "monitor_progress": monitor_progress, "assistant_model": kwargs.get("assistant_model"),
                       "decoder_input_ids": kwargs.get("decoder_input_ids")}
        for name, value in unsupported.items():
            if value is not None:
                raise NotImplementedError(f"Whisper generate: {name} is not supported")
        if isinstance(temperature, (list, tuple)):
            raise NotImplementedError("Whisper generate: the temperature fallback (a list of temperatures) is not "
                                      "supported")
        if synced_gpus:
            warn_once("Whisper generate: synced_gpus is accepted for compatibility and ignored")
        if input_features is None:
            input_features = kwargs.pop("inputs", None)
        encoder_outputs = kwargs.pop("encoder_outputs", None)
        config, model_kwargs, _ = self._prepare_generation_config(generation_config, kwargs)
        # transformers' Whisper samples only with a positive `temperature` argument (do_sample is overridden)
        config.do_sample = temperature is not None and temperature > 0.0
        config.temperature = temperature if config.do_sample else 1.0
        if config.do_sample:
            config.num_beams = 1
        for name in ("return_dict_in_generate", "output_scores", "output_logits"):
            if getattr(config, name, False):
                raise NotImplementedError(f"Whisper generate: {name}=True is not supported")
        if (config.num_return_sequences or 1) > 1:
            raise NotImplementedError("Whisper generate: num_return_sequences > 1 is not supported")
        if getattr(config, "no_speech_threshold", None) is not None:
            raise NotImplementedError("Whisper generate: no_speech_threshold is not supported")
        for key in model_kwargs:
            warn_once(f"Whisper generate: keyword {key!r} is accepted for compatibility and ignored")

        # -- inputs: the encoder runs once
        kind = tensor_io.MINDSPORE
        if encoder_outputs is not None:
            kind = tensor_io.kind_of(encoder_outputs[0]) or kind
            hidden = tensor_io.to_mindspore(encoder_outputs[0])
            batch, frames = hidden.shape[0], None
        elif input_features is not None:
            kind = tensor_io.kind_of(input_features) or kind
            feats = np.asarray(tensor_io.to_numpy(input_features), np.float32)
            batch, frames = feats.shape[0], feats.shape[-1]
        else:
            raise ValueError("Whisper generate needs input_features (or encoder_outputs)")
        segment_frames = self.model.encoder.conv1.stride * self.model.encoder.conv2.stride * \
            self.config.max_source_positions
        if frames is not None and frames > segment_frames:
            raise NotImplementedError(f"Whisper generate: long-form audio ({frames} > {segment_frames} mel frames, "
                                      "more than 30 s) is not supported")
        if attention_mask is not None:
            warn_once("Whisper generate: attention_mask (of the input features) is accepted and ignored, as "
                      "transformers does for short-form audio")
        if encoder_outputs is None:
            hidden = self.model.encoder(ms.Tensor(feats)).last_hidden_state

        timestamp_begin = self._set_return_timestamps(return_timestamps, config)
        self._set_language_and_task(language, task, is_multilingual, config)
        init = self._retrieve_init_tokens(hidden, batch, config)                 # [B, P]
        begin_index = init.shape[1]

        # -- lengths (transformers' _set_max_new_tokens_and_length, then the generic rule)
        max_target = self.config.max_target_positions
        if config.max_new_tokens is not None:
            if config.max_new_tokens + begin_index > max_target:
                raise ValueError(f"The length of `decoder_input_ids`, including special start tokens, is "
                                 f"{begin_index}, and `max_new_tokens` is {config.max_new_tokens}: together they "
                                 f"exceed the `max_target_positions` of the Whisper model: {max_target}.")
            config.max_length = config.max_new_tokens + begin_index
        else:
            config.max_length = min(config.max_length + min(max_target // 2 - 1, begin_index), max_target)
        if begin_index >= config.max_length:
            raise ValueError(f"Input length of decoder_input_ids is {begin_index}, but `max_length` is set to "
                             f"{config.max_length}. Set `max_new_tokens` or increase `max_length`.")

        # -- processors: transformers prepends Whisper's (begin-suppress, suppress, timestamps) to the caller's
        whisper_processors = []
        if config.begin_suppress_tokens is not None:
            whisper_processors.append(lp.SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens,
                                                                              begin_index))
        if config.suppress_tokens is not None:
            whisper_processors.append(lp.SuppressTokensLogitsProcessor(config.suppress_tokens))
        config.suppress_tokens = config.begin_suppress_tokens = None
        eos = _as_list(config.eos_token_id)
        pad = config.pad_token_id
        pad = int(_as_list(pad)[0]) if pad is not None else (eos[0] if eos else None)
        ones = np.ones_like(init)
        processors = self._logits_processors(config, begin_index, eos, whisper_processors + list(logits_processor or []),
                                             ones)
        criteria = self._stopping_criteria(config, eos, None, stopping_criteria)

        runner = Seq2SeqRunner(self, hidden)
        if config.num_beams > 1:
            result = self._beam_search(runner, init, ones, config, processors, criteria, pad, eos)
        else:
            result = self._sample_loop(runner, init, ones, config, processors, criteria, pad, eos, None)
        return _as_kind(self._postprocess(result["sequences"][:, begin_index:], pad, eos, timestamp_begin), kind)

    @staticmethod
    def _postprocess(generated, pad, eos, timestamp_begin):
        """transformers' short-form result: per row, drop the padding (all pad tokens, as it counts them) and a
        final end-of-text, then right-pad the rows with pad_token_id to the longest."""
        rows = []
        for row in generated:
            if pad is not None and len(row) and row[-1] == pad:
                count = int((row == pad).sum()) - (1 if pad in eos else 0)
                if count:
                    row = row[:-count]
            if eos and len(row) and row[-1] in eos:
                row = row[:-1]
            stamps = row >= timestamp_begin
            if (stamps[:-1] & stamps[1:]).any():
                warn_once("Whisper generate: the output holds consecutive timestamp tokens; transformers would "
                          "decode again from the last timestamp (its long-form seek), this returns one decoding")
            rows.append(row)
        width = max(len(r) for r in rows)
        out = np.full((len(rows), width), pad if pad is not None else 0, np.int64)
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        return out

    # ------------------------------------------------------------------ the decoder prompt
    def _set_return_timestamps(self, return_timestamps, config):
        if return_timestamps is None:
            return_timestamps = getattr(config, "return_timestamps", None)
        if return_timestamps:
            raise NotImplementedError("Whisper generate: return_timestamps=True (timestamp prediction) is not "
                                      "supported yet")
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

    def _retrieve_init_tokens(self, hidden, batch, config):
        """transformers' _retrieve_init_tokens: [B, P] decoder prompt."""
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
            lang_ids = self._detect_language(hidden, config).tolist()
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
