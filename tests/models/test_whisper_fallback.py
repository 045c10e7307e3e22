"""Whisper's generate options beyond plain decoding, against HF's WhisperForConditionalGeneration.generate
(torch, fp32): `prompt_ids` (first segment or every window), `condition_on_prev_tokens` on long-form audio, and
the temperature fallback's thresholds (compression ratio, average log-probability, no-speech skip). Sampling
cannot be compared token for token (different random generators), so the cases here are the deterministic
ones: the thresholds' arithmetic equals transformers' own functions, a window skipped as silence is skipped on
both sides, and a fallback list whose first temperature passes decodes greedily on both sides."""
import numpy as np
import pytest

from tests.models.test_whisper_generate import (assert_same_output, input_features, models,  # noqa: F401
                                                timestamp_models, whisper_dir)

PREV_SOT = 79  # <|startofprev|> in the tiny vocabulary (set as prev_sot_token_id below)


def _both(models, features, **kwargs):
    import torch

    hf, ours = models
    tensors = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    with torch.no_grad():
        expected = hf.generate(torch.tensor(features), **tensors).numpy()
    return ours.generate(features, **kwargs), expected


@pytest.mark.parametrize("kwargs", [
    {"prompt_ids": np.array([PREV_SOT, 30, 31, 32]), "language": "german"},
    {"prompt_ids": np.array([PREV_SOT, 40, 41]), "num_beams": 2},
    {"temperature": (0.0, 0.4, 0.8), "compression_ratio_threshold": 50.0, "logprob_threshold": -50.0},
])
def test_short_form_options_match_hf(models, input_features, kwargs):
    models[0].generation_config.prev_sot_token_id = models[1].generation_config.prev_sot_token_id = PREV_SOT
    got, expected = _both(models, input_features, **kwargs)
    np.testing.assert_array_equal(got, expected)


def test_no_speech_skip_matches_hf(models, input_features):
    """A threshold between the two rows' no-speech probabilities (read from HF's logits after the start token,
    as transformers' WhisperNoSpeechDetection does) skips one row on both sides; one temperature, so no sampling."""
    import torch

    hf, _ = models
    init = torch.tensor([[3, 82, 84, 95]] * 2)  # start, <|de|>, transcribe, <|notimestamps|>
    with torch.no_grad():
        logits = hf(input_features=torch.tensor(input_features), decoder_input_ids=init).logits[:, 0]
    no_speech = logits.softmax(-1)[:, 95 - 1].numpy()
    assert abs(no_speech[0] - no_speech[1]) > 1e-4, no_speech
    kwargs = dict(language="german", temperature=(0.0,), logprob_threshold=100.0,
                  no_speech_threshold=float(no_speech.mean()), return_segments=True)
    with torch.no_grad():
        expected = hf.generate(torch.tensor(input_features), **kwargs)
    got = models[1].generate(input_features, **kwargs)
    # the skipped row has no segment; the other's holds its window's sequence and scores (the logprob threshold
    # makes transformers keep them)
    assert_same_output(got["segments"], expected["segments"], "segments")
    # transformers stacks the skipped row's empty float tensor with the others: its sequences turn float32;
    # ours stay int64 (docs/differences.md)
    sequences = expected["sequences"].numpy()
    assert sequences.dtype == np.float32 and got["sequences"].dtype == np.int64
    np.testing.assert_array_equal(got["sequences"], sequences)
    assert (sequences[no_speech.argmax()] == 0).all() and (sequences[no_speech.argmin()] != 0).any()
    assert not expected["segments"][no_speech.argmax()] and "scores" in expected["segments"][no_speech.argmin()][0][
        "result"]


@pytest.mark.parametrize("kwargs", [
    {"condition_on_prev_tokens": True},
    {"condition_on_prev_tokens": True, "prompt_ids": np.array([11, 50, 51]), "prompt_condition_type": "all-segments"},
    {"prompt_ids": np.array([11, 50, 51, 52])},
])
def test_long_form_conditioning_matches_hf(timestamp_models, kwargs):
    """Two audios over 30 s, batched by attention_mask: the previous window's text (left-padded per row) or the
    prompt conditions each window; <|startofprev|> is suppress_tokens[-2] (11) as for old generation configs."""
    import torch
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(3)
    audio = [rng.standard_normal(16000 * 40).astype(np.float32) * 0.1, np.sin(np.arange(16000 * 33) / 5.0)]
    inputs = WhisperFeatureExtractor(feature_size=8)(audio, sampling_rate=16000, return_tensors="np",
                                                     truncation=False, padding="longest", return_attention_mask=True)
    hf, ours = timestamp_models
    tensors = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    with torch.no_grad():
        expected = hf.generate(torch.tensor(inputs.input_features), attention_mask=torch.tensor(inputs.attention_mask),
                               language="en", **tensors).numpy()
    got = ours.generate(inputs.input_features, attention_mask=inputs.attention_mask, language="en", **kwargs)
    np.testing.assert_array_equal(got, expected)


def test_threshold_arithmetic_equals_transformers():
    import torch
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin as HF
    from mindformers_hf.models.whisper.generation_whisper import _average_logprob, _compression_ratio

    rng = np.random.default_rng(0)
    for vocab in (96, 51865):
        tokens = np.concatenate([rng.integers(0, vocab, 20), np.full(30, 7)])
        assert _compression_ratio(tokens, vocab) == HF._retrieve_compression_ratio(torch.tensor(tokens), vocab)
    scores = rng.standard_normal((6, 50)).astype(np.float32)
    scores[:, :5] = -np.inf
    for tokens, temperature in ((rng.integers(5, 50, 6), 0.0), (rng.integers(5, 50, 4), 0.6),
                                (rng.integers(5, 50, 9), 1.0)):
        want = HF._retrieve_avg_logprobs(list(torch.tensor(scores)), torch.tensor(tokens), temperature).item()
        assert abs(_average_logprob(list(scores), tokens, temperature) - want) < 1e-5
