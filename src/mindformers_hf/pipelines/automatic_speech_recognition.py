"""pipeline("automatic-speech-recognition") for Whisper, following transformers' pipeline: audio (a numpy array
at the feature extractor's sampling rate, a `{"raw" or "array", "sampling_rate"}` dict, or a file path read
with soundfile) -> transformers' WhisperFeatureExtractor (numpy) -> our `generate` (audio over 30 s goes
through its seek loop, as transformers' pipeline does without chunking; with `chunk_length_s`, each
overlapping chunk is decoded on its own, as transformers' chunk_iter cuts them) -> the tokenizer's
`_decode_asr` (transformers' own Whisper text assembly, which merges the chunks by their strides) ->
`{"text": ...}`. `return_timestamps="word"` asks generate for token timestamps (cross-attention of the
alignment heads, dynamic time warping) with each window's offset, which `_decode_asr` groups into words.

As in transformers, the pipeline's generation defaults (`max_new_tokens=256`, `num_beams=5`, the tokenizer's
pad id) apply to what neither the call nor the model's generation config sets.
"""

import numpy as np

from ..utils import warn_once
from .generation_defaults import prepare_generate_kwargs

# transformers' AutomaticSpeechRecognitionPipeline._default_generation_config
_GENERATION_DEFAULTS = {"max_new_tokens": 256, "num_beams": 5}


class AutomaticSpeechRecognitionPipeline:
    task = "automatic-speech-recognition"

    def __init__(self, model, tokenizer, feature_extractor=None, **kwargs):
        if getattr(model.config, "model_type", None) != "whisper":
            raise NotImplementedError(f"automatic-speech-recognition: only Whisper models are supported, got "
                                      f"model_type {model.config.model_type!r}")
        if feature_extractor is None or isinstance(feature_extractor, str):
            from transformers import AutoFeatureExtractor

            feature_extractor = AutoFeatureExtractor.from_pretrained(
                feature_extractor or model.config.name_or_path)
        self.model, self.tokenizer, self.feature_extractor = model, tokenizer, feature_extractor
        self._defaults = {k: v for k, v in _GENERATION_DEFAULTS.items()}
        if tokenizer is not None and tokenizer.pad_token_id is not None:
            self._defaults["pad_token_id"] = tokenizer.pad_token_id
        self._call_defaults = kwargs

    def __call__(self, inputs, return_timestamps=None, return_language=None, chunk_length_s=None,
                 stride_length_s=None, generate_kwargs=None, batch_size=None, ignore_warning=None, **kwargs):
        if getattr(self.model.generation_config, "return_timestamps", False):
            return_timestamps = return_timestamps or self.model.generation_config.return_timestamps
        if return_timestamps == "char":
            raise ValueError("Whisper cannot return `char` timestamps, only word level or segment level timestamps. "
                             "Use `return_timestamps='word'` or `return_timestamps=True` respectively.")
        if batch_size is not None:
            warn_once("automatic-speech-recognition: batch_size is accepted and ignored (one audio per generate)")
        call_kwargs = {**self._call_defaults, **(generate_kwargs or {}), **kwargs}
        chunking = self._chunking(chunk_length_s, stride_length_s)
        if isinstance(inputs, (list, tuple)):
            return [self._one(item, return_timestamps, return_language, call_kwargs, chunking) for item in inputs]
        return self._one(inputs, return_timestamps, return_language, call_kwargs, chunking)

    def _chunking(self, chunk_length_s, stride_length_s):
        """transformers' preprocess: chunk and stride lengths in samples (the strides default to a sixth of the
        chunk on each side), or None without chunking."""
        if not chunk_length_s:
            return None
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        if isinstance(stride_length_s, (int, float)):
            stride_length_s = [stride_length_s, stride_length_s]
        align = getattr(self.model.config, "inputs_to_logits_ratio", 1)
        rate = self.feature_extractor.sampling_rate
        chunk, left, right = (int(round(seconds * rate / align) * align)
                              for seconds in (chunk_length_s, *stride_length_s))
        if chunk < left + right:
            raise ValueError("Chunk length must be superior to stride length")
        return chunk, left, right

    # ------------------------------------------------------------------ one audio
    def _audio(self, inputs):
        rate = self.feature_extractor.sampling_rate
        if isinstance(inputs, str):
            try:
                import soundfile
            except ImportError:
                raise ImportError("automatic-speech-recognition reads audio files with soundfile: "
                                  "`pip install soundfile`, or pass a numpy array") from None
            data, file_rate = soundfile.read(inputs, dtype="float32")  # [samples] or [samples, channels]
            inputs = {"array": data.T, "sampling_rate": file_rate}
        if isinstance(inputs, bytes):
            raise NotImplementedError("automatic-speech-recognition: audio bytes are not supported (transformers "
                                      "decodes them with ffmpeg); pass a numpy array or a file path")
        if isinstance(inputs, dict):
            if not ("sampling_rate" in inputs and ("raw" in inputs or "array" in inputs)):
                raise ValueError("When passing a dictionary to AutomaticSpeechRecognitionPipeline, the dict needs to "
                                 "contain a \"raw\" key containing the numpy array representing the audio and a "
                                 "\"sampling_rate\" key, containing the sampling_rate associated with that array")
            array = inputs.get("raw") if inputs.get("raw") is not None else inputs.get("array")
            if inputs["sampling_rate"] != rate:
                raise NotImplementedError(f"automatic-speech-recognition: resampling ({inputs['sampling_rate']} Hz "
                                          f"to {rate} Hz) is not supported; resample the audio first")
            inputs = array
        from .. import tensor_io

        audio = np.asarray(tensor_io.to_numpy(inputs) if tensor_io.kind_of(inputs) else inputs)
        if audio.ndim == 2:  # transformers' _to_mono: (channels, samples), at most 2 channels, averaged
            if audio.shape[0] > 2:
                raise ValueError(f"AutomaticSpeechRecognitionPipeline reads axis 0 as channels, and it has size "
                                 f"{audio.shape[0]} in the input of shape {audio.shape}. If this array is "
                                 "channels-last `(samples, channels)`, transpose it first.")
            audio = audio.mean(axis=0)
        if audio.ndim != 1:
            raise ValueError("AutomaticSpeechRecognitionPipeline expects mono audio shaped `(samples,)` or "
                             f"multi-channel audio shaped `(channels, samples)`, got shape {audio.shape}")
        return audio

    def _generate_kwargs(self, kwargs):
        return prepare_generate_kwargs(self.model, kwargs, self._defaults)

    def _one(self, inputs, return_timestamps, return_language, kwargs, chunking):
        audio = self._audio(inputs)
        kwargs = self._generate_kwargs(kwargs)
        if return_timestamps:
            kwargs["return_timestamps"] = True
        if return_timestamps == "word":  # token times from the alignment heads, read from the segments
            kwargs.update(return_token_timestamps=True, return_segments=True)
        if return_language:  # the language token is read from the first segment's whole sequence
            kwargs["return_segments"] = True
        if chunking is None:
            longform = audio.shape[0] > self.feature_extractor.n_samples  # generate's seek loop over 30 s windows
            pieces = [{"audio": audio, "is_last": True,
                       "extract": {"truncation": False, "padding": "longest"} if longform else {}}]
        else:
            pieces = list(_chunks(audio, *chunking))
        outputs = []
        for piece in pieces:
            processed = self.feature_extractor(piece["audio"], sampling_rate=self.feature_extractor.sampling_rate,
                                               return_tensors="np", return_attention_mask=True, **piece["extract"])
            generated = self.model.generate(processed.input_features, attention_mask=processed.attention_mask,
                                            **kwargs)
            output = {"is_last": piece["is_last"]}
            language = None
            if isinstance(generated, dict):
                if return_timestamps == "word":  # as transformers: each row's segment times, with the offsets
                    output["token_timestamps"] = [np.concatenate([np.asarray(s["token_timestamps"]) for s in row])
                                                  if row else np.zeros(0, np.float32) for row in generated["segments"]]
                if return_language:
                    language = self._language_token(generated["segments"], kwargs)
                generated = generated["sequences"]
            output["tokens"] = np.asarray(generated)
            if language is not None:  # transformers puts it back before the tokens, for _decode_asr to find
                output["tokens"] = np.concatenate([np.full((1, 1), language, output["tokens"].dtype),
                                                   output["tokens"]], -1)
            if "stride" in piece:  # the tokenizer merges overlapping chunks by their strides, in seconds
                output["stride"] = tuple(n / self.feature_extractor.sampling_rate for n in piece["stride"])
            outputs.append(output)
        time_precision = self.feature_extractor.chunk_length / self.model.config.max_source_positions
        text, optional = self.tokenizer._decode_asr(outputs, return_timestamps=return_timestamps,
                                                    return_language=return_language, time_precision=time_precision)
        return {"text": text, **optional}

    def _language_token(self, segments, kwargs):
        """transformers' _forward: the first language id in the first segment's whole window sequence (generate
        returns the tokens after the decoder prompt only), or None."""
        if not segments or not segments[0]:
            return None
        result = segments[0][0]["result"]
        sequence = np.asarray(result["sequences"] if isinstance(result, dict) else result)
        config = kwargs.get("generation_config", self.model.generation_config)
        ids = set(getattr(config, "lang_to_id", {}).values())
        return next((int(t) for t in sequence.tolist() if t in ids), None)


def _chunks(audio, chunk_len, stride_left, stride_right):
    """transformers' chunk_iter: windows of chunk_len samples overlapping by the strides; each knows its
    (length, left stride, right stride), the first has no left stride and the last no right one."""
    step = chunk_len - stride_left - stride_right
    for start in range(0, audio.shape[0], step):
        end = start + chunk_len
        chunk = audio[start:end]
        is_last = end >= audio.shape[0]
        left = 0 if start == 0 else stride_left
        if chunk.shape[0] > left:
            yield {"audio": chunk, "is_last": is_last, "extract": {},
                   "stride": (chunk.shape[0], left, 0 if is_last else stride_right)}
        if is_last:
            break
