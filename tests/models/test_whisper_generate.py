"""Whisper's generate against HF's WhisperForConditionalGeneration.generate (torch, fp32) on a tiny checkpoint
and a tiny multilingual generation config; input features from transformers' WhisperFeatureExtractor (numpy).
Tokens must be equal: both sides run greedy decoding on logits that agree to ~1e-5."""
import json

import numpy as np
import pytest

from tests.models.test_whisper_parity import make_whisper_checkpoint

# vocab 96: languages 80-82, tasks 83-84, <|notimestamps|> 95 (so no id is a timestamp token)
GENERATION = dict(decoder_start_token_id=3, eos_token_id=2, pad_token_id=0, bos_token_id=1, max_length=24,
                  lang_to_id={"<|en|>": 80, "<|zh|>": 81, "<|de|>": 82}, task_to_id={"translate": 83, "transcribe": 84},
                  no_timestamps_token_id=95, is_multilingual=True, suppress_tokens=[10, 11, 12],
                  begin_suppress_tokens=[2, 20], forced_decoder_ids=[[1, None], [2, 84]])


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    # init_std 0.5: a random model with std 0.02 repeats one token; larger weights give varied sequences
    folder = make_whisper_checkpoint(tmp_path_factory.mktemp("whisper_gen"), max_source_positions=1500,
                                     init_std=0.5)
    with open(f"{folder}/generation_config.json", "w") as f:
        json.dump(GENERATION, f)
    return folder


@pytest.fixture(scope="module")
def input_features():
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(16000).astype(np.float32) * 0.1, np.sin(np.arange(24000) / 7.0).astype(np.float32)]
    return WhisperFeatureExtractor(feature_size=8)(audio, sampling_rate=16000, return_tensors="np").input_features


@pytest.fixture(scope="module")
def models(whisper_dir):
    import torch
    import transformers
    from mindformers_hf.models.whisper import WhisperForConditionalGeneration

    hf = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_dir, dtype=torch.float32).eval()
    return hf, WhisperForConditionalGeneration.from_pretrained(whisper_dir)


@pytest.mark.parametrize("kwargs", [
    {},                                             # forced_decoder_ids: language detected, then transcribe
    {"language": "german"},
    {"language": ["en", "<|zh|>"], "task": "translate"},
    {"max_new_tokens": 5},
    {"language": "german", "eos_token_id": 17},     # rows end at different steps: end-of-text dropped, padding
    {"language": "german", "eos_token_id": 49, "pad_token_id": 49},
    {"suppress_tokens": [41, 44], "begin_suppress_tokens": [74, 80]},
    {"num_beams": 3},
    {"language": "german", "num_beams": 2, "eos_token_id": 17, "length_penalty": 0.5},
    {"do_sample": True},                            # transformers' Whisper samples only with temperature > 0
])
def test_generate_matches_hf(models, input_features, kwargs):
    import torch

    hf, ours = models
    with torch.no_grad():
        expected = hf.generate(torch.tensor(input_features), **kwargs).numpy()
    got = ours.generate(input_features, **kwargs)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, expected)


def test_detect_language_matches_hf(models, input_features):
    import torch

    hf, ours = models
    with torch.no_grad():
        expected = hf.detect_language(torch.tensor(input_features)).numpy()
    np.testing.assert_array_equal(ours.detect_language(input_features), expected)


def test_unsupported_options_raise(models, input_features):
    _, ours = models
    with pytest.raises(ValueError, match="no_speech_threshold needs logprob_threshold"):
        ours.generate(input_features, no_speech_threshold=0.6)
    with pytest.raises(NotImplementedError, match="logprob_threshold with beam search"):
        ours.generate(input_features, logprob_threshold=-1.0, temperature=0.0, num_beams=2)
    with pytest.raises(NotImplementedError, match="output_hidden_states"):
        ours.generate(input_features, return_dict_in_generate=True, output_hidden_states=True)
    with pytest.raises(NotImplementedError, match="output_attentions"):
        ours.generate(input_features, return_dict_in_generate=True, output_attentions=True)
    with pytest.raises(ValueError, match="Unsupported language: klingon"):
        ours.generate(input_features, language="klingon")
    with pytest.raises(ValueError, match="no `alignment_heads`"):  # as transformers
        ours.generate(input_features, return_token_timestamps=True)


def test_auto_classes_build_whisper(whisper_dir):
    from mindformers_hf import AutoModel, AutoModelForSpeechSeq2Seq, WhisperForConditionalGeneration, WhisperModel

    assert type(AutoModelForSpeechSeq2Seq.from_pretrained(whisper_dir)) is WhisperForConditionalGeneration
    assert type(AutoModel.from_pretrained(whisper_dir)) is WhisperModel


def _write_processor(folder):
    """A tiny WhisperProcessor (byte-level BPE over letters + Whisper's special tokens), saved by transformers."""
    import transformers

    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab["\u0120"] = len(vocab)
    for token in ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"):
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    extractor = transformers.WhisperFeatureExtractor(feature_size=8)
    transformers.WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)


def test_processor_reexports_run_without_torch(tmp_path):
    """AutoProcessor / WhisperProcessor / WhisperFeatureExtractor are transformers' own and need no torch."""
    import os
    import subprocess
    import sys

    _write_processor(tmp_path)
    code = (
        "import sys\nsys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from mindformers_hf import AutoProcessor, AutoFeatureExtractor, WhisperProcessor, WhisperFeatureExtractor\n"
        f"p = AutoProcessor.from_pretrained({str(tmp_path)!r})\n"
        "assert isinstance(p, WhisperProcessor), type(p)\n"
        f"assert isinstance(AutoFeatureExtractor.from_pretrained({str(tmp_path)!r}), WhisperFeatureExtractor)\n"
        "x = p(audio=np.zeros(16000, np.float32), sampling_rate=16000, return_tensors='np').input_features\n"
        "print(x.shape, p.batch_decode([[1, 2, 3]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(1, 8, 3000) ['bcd']"), result.stdout


# Timestamps: a vocabulary of 1600 with Whisper's layout at the end (<|notimestamps|> 98, then 1501 timestamps
# <|0.00|> .. <|30.00|>), so a window's timestamps span its 3000 frames as in the published models.
# alignment_heads: the [layer, head] cross-attentions that token timestamps align to the audio.
TIMESTAMPED = dict(GENERATION, no_timestamps_token_id=98, max_initial_timestamp_index=50,
                   alignment_heads=[[0, 1], [1, 0], [1, 3]])


@pytest.fixture(scope="module")
def timestamp_models(tmp_path_factory):
    import torch
    import transformers
    from mindformers_hf.models.whisper import WhisperForConditionalGeneration

    folder = make_whisper_checkpoint(tmp_path_factory.mktemp("whisper_ts"), max_source_positions=1500,
                                     init_std=0.5, vocab_size=1600)
    with open(f"{folder}/generation_config.json", "w") as f:
        json.dump(TIMESTAMPED, f)
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return hf, WhisperForConditionalGeneration.from_pretrained(folder)


@pytest.mark.parametrize("kwargs", [
    {"return_timestamps": True, "language": "german"},
    {"return_timestamps": True, "num_beams": 2},
    {"language": "en"},   # no timestamps asked: consecutive timestamp tokens still make transformers seek on
])
def test_timestamps_match_hf(timestamp_models, input_features, kwargs):
    import torch

    hf, ours = timestamp_models
    with torch.no_grad():
        expected = hf.generate(torch.tensor(input_features), **kwargs).numpy()
    np.testing.assert_array_equal(ours.generate(input_features, **kwargs), expected)


def test_long_form_matches_hf(timestamp_models):
    """Audio over 30 s: transformers' seek loop over 30 s windows (greedy, no fallback), batched by attention_mask."""
    import torch
    from transformers import WhisperFeatureExtractor

    hf, ours = timestamp_models
    rng = np.random.default_rng(3)
    audio = [rng.standard_normal(16000 * 40).astype(np.float32) * 0.1, np.sin(np.arange(16000 * 33) / 5.0)]
    inputs = WhisperFeatureExtractor(feature_size=8)(audio, sampling_rate=16000, return_tensors="np",
                                                     truncation=False, padding="longest", return_attention_mask=True)
    assert inputs.input_features.shape[-1] > 3000
    with torch.no_grad():
        expected = hf.generate(torch.tensor(inputs.input_features), attention_mask=torch.tensor(inputs.attention_mask),
                               language="en").numpy()
    got = ours.generate(inputs.input_features, attention_mask=inputs.attention_mask, language="en")
    np.testing.assert_array_equal(got, expected)
    # the segments (their times after 30 s carry the window's offset) and each window's scores
    kwargs = dict(language="en", return_timestamps=True, return_segments=True, return_dict_in_generate=True,
                  output_scores=True, max_new_tokens=8)
    progress, expected_progress = [], []  # monitor_progress: [B, 2] (frames done, frames in all) per window
    with torch.no_grad():
        expected = hf.generate(torch.tensor(inputs.input_features), attention_mask=torch.tensor(inputs.attention_mask),
                               monitor_progress=lambda p: expected_progress.append(p.clone()), **kwargs)
    assert max(float(s["end"]) for s in expected["segments"][0]) > 30
    got = ours.generate(inputs.input_features, attention_mask=inputs.attention_mask,
                        monitor_progress=lambda p: progress.append(p.copy()), **kwargs)
    assert_same_output(got, expected)
    assert len(expected_progress) > 2
    assert_same_output(progress, expected_progress, "progress")


@pytest.mark.parametrize("kwargs,rows", [
    # without timestamps asked, timestamp ids still split the window: it is decoded again from the last one
    ({"language": "en", "max_new_tokens": 12}, 2),
    ({"return_timestamps": True, "language": "german", "num_beams": 2, "max_new_tokens": 10}, 1),
])
def test_token_timestamps_match_hf(timestamp_models, kwargs, rows):
    """return_token_timestamps (with return_segments): {"sequences", "token_timestamps", "segments"}, the times
    from dynamic time warping over the alignment heads' cross-attention (cropped to the audio by attention_mask),
    equal to transformers'."""
    import torch
    from transformers import WhisperFeatureExtractor

    hf, ours = timestamp_models
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(16000).astype(np.float32) * 0.1, np.sin(np.arange(24000) / 7.0).astype(np.float32)]
    inputs = WhisperFeatureExtractor(feature_size=8)(audio[:rows], sampling_rate=16000, return_tensors="np",
                                                     return_attention_mask=True)
    with torch.no_grad():
        expected = hf.generate(torch.tensor(inputs.input_features), return_token_timestamps=True,
                               attention_mask=torch.tensor(inputs.attention_mask), return_segments=True, **kwargs)
    got = ours.generate(inputs.input_features, return_token_timestamps=True, attention_mask=inputs.attention_mask,
                        return_segments=True, **kwargs)
    np.testing.assert_array_equal(np.asarray(got["sequences"]), expected["sequences"].numpy())
    times = np.asarray(got["token_timestamps"])
    assert times.dtype == np.float32 and times.max() > 0
    np.testing.assert_allclose(times, expected["token_timestamps"].numpy(), rtol=0, atol=1e-4)
    # each segment's times (with its window's offset) and its window's row: sequence, scores, times
    assert_same_output(got["segments"], expected["segments"], "segments")
    if rows == 1:
        with pytest.raises(NotImplementedError, match="return_token_timestamps with beam search"):
            ours.generate(np.concatenate([inputs.input_features] * 2), return_token_timestamps=True, **kwargs)


# transformers' per-window outputs also carry the cache (and, with token timestamps, the attentions it records);
# ours leave them out (docs/differences.md)
_NOT_RETURNED = {"cache", "past_key_values", "encoder_attentions", "decoder_attentions", "cross_attentions"}


def assert_same_output(got, expected, where="output"):
    """Our generate output against transformers': the same structure (dict keys, list lengths, output class
    name), integer tensors equal, float tensors of the same dtype within 1e-4 (-inf where transformers has it)."""
    import torch

    if isinstance(expected, torch.Tensor):
        assert isinstance(got, np.ndarray), f"{where}: {type(got)}"
        want = expected.numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, f"{where}: {got.dtype}{got.shape} vs " \
                                                                    f"{want.dtype}{want.shape}"
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=where)
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)
    elif isinstance(expected, dict):
        if type(expected) is not dict:
            assert type(got).__name__ == type(expected).__name__, where
        keys = [k for k, v in expected.items() if k not in _NOT_RETURNED and v is not None]
        assert list(got.keys()) == keys, f"{where}: {list(got.keys())} vs {keys}"
        for key in keys:
            assert_same_output(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected), f"{where}: {type(got)} {len(got)} vs " \
                                                                          f"{type(expected)} {len(expected)}"
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same_output(a, b, f"{where}[{i}]")
    else:
        assert got == expected, f"{where}: {got!r} vs {expected!r}"


@pytest.mark.parametrize("kwargs", [
    # segments: timestamp pairs split each window; their `result` is the window's row dict (scores, logits)
    {"return_timestamps": True, "language": "german", "return_dict_in_generate": True, "output_scores": True,
     "output_logits": True, "max_new_tokens": 12},
    # no timestamps: transformers' own output class with the window's whole sequences, beam scores and indices
    {"language": "german", "num_beams": 2, "return_dict_in_generate": True, "output_scores": True,
     "max_new_tokens": 4},
    # return_segments alone: each segment's `result` is the window's row (prompt, tokens, padding); with
    # force_unique_generate_call the sequences are those whole rows of the one window
    {"return_timestamps": True, "language": "en", "return_segments": True, "max_new_tokens": 10,
     "force_unique_generate_call": True},
])
def test_segments_and_dict_outputs_match_hf(timestamp_models, input_features, kwargs):
    import torch

    hf, ours = timestamp_models
    with torch.no_grad():
        expected = hf.generate(torch.tensor(input_features), **kwargs)
    got = ours.generate(input_features, **kwargs)
    if "segments" in expected:
        assert sum(len(row) for row in expected["segments"]) > 2
    assert_same_output(got, expected)
