"""pipeline("automatic-speech-recognition") against transformers' pipeline (torch) on the same folder: a tiny
Whisper written by HF, a tiny multilingual generation config, a Whisper tokenizer whose 96 ids match the
model's vocabulary and transformers' WhisperFeatureExtractor. Both decode the tokens with the tokenizer's own
`_decode_asr`, so the texts must be equal."""
import json

import numpy as np
import pytest

from tests.models.test_whisper_generate import GENERATION
from tests.models.test_whisper_parity import make_whisper_checkpoint

SPECIAL = {0: "<|pad|>", 2: "<|endoftext|>", 3: "<|startoftranscript|>", 80: "<|en|>", 81: "<|zh|>", 82: "<|de|>",
           83: "<|translate|>", 84: "<|transcribe|>", 85: "<|startofprev|>", 95: "<|notimestamps|>"}


def _write_tokenizer_and_extractor(folder, special=SPECIAL, size=96):
    import transformers

    letters = "abcdefghijklmnopqrstuvwxyz"
    plain = list(letters) + ["\u0120"] + [a + b for a in letters for b in "aeiou"]  # decodable byte-level strings
    vocab, words = {}, iter(plain)
    for i in range(size):
        vocab[special.get(i) or next(words)] = i
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                              pad_token="<|pad|>")
    tokenizer.add_special_tokens({"additional_special_tokens": [t for i, t in special.items() if i not in (0, 2)]})
    assert len(tokenizer) == size
    tokenizer.save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=8).save_pretrained(folder)


@pytest.fixture(scope="module")
def asr_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whisper_asr")
    make_whisper_checkpoint(folder, max_source_positions=1500, init_std=0.5)
    (folder / "generation_config.json").write_text(json.dumps(GENERATION))
    _write_tokenizer_and_extractor(folder)
    return str(folder)


@pytest.fixture(scope="module")
def pipes(asr_dir):
    import transformers
    from mindformers_hf import pipeline

    return pipeline("automatic-speech-recognition", model=asr_dir), transformers.pipeline(
        "automatic-speech-recognition", model=asr_dir)


def _audio(seed, seconds):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


@pytest.mark.parametrize("call", [
    dict(),                                                              # pipeline defaults: num_beams=5
    dict(generate_kwargs={"language": "german", "num_beams": 1}),
    dict(generate_kwargs={"task": "translate", "language": "en"}, max_new_tokens=6),
    # the detected language token, read from the first segment's whole sequence, starts the chunks' languages
    dict(return_language=True, generate_kwargs={"num_beams": 1}, max_new_tokens=8),
])
def test_asr_pipeline_matches_transformers(pipes, call):
    ours, hf = pipes
    audio = _audio(0, 1.5)
    expected = hf(audio.copy(), **call)
    assert expected["text"]  # the tiny model writes something
    if call.get("return_language"):
        assert expected["chunks"][0]["language"]
    assert ours(audio, **call) == expected
    assert ours({"raw": audio, "sampling_rate": 16000}, **call) == expected


def test_asr_pipeline_unsupported_inputs_raise(pipes):
    ours, _ = pipes
    with pytest.raises(ValueError, match="Chunk length must be superior to stride length"):
        ours(_audio(1, 1.0), chunk_length_s=2, stride_length_s=1.5)
    with pytest.raises(NotImplementedError, match="resampling"):
        ours({"array": _audio(1, 1.0), "sampling_rate": 8000})


@pytest.fixture(scope="module")
def timestamp_pipes(tmp_path_factory):
    """Timestamps need Whisper's layout: 1501 timestamp ids after <|notimestamps|> (vocabulary of 1600)."""
    import transformers
    from mindformers_hf import pipeline

    folder = tmp_path_factory.mktemp("whisper_asr_ts")
    make_whisper_checkpoint(folder, max_source_positions=1500, init_std=0.5, vocab_size=1600)
    (folder / "generation_config.json").write_text(json.dumps(dict(GENERATION, no_timestamps_token_id=98,
                                                                   alignment_heads=[[0, 1], [1, 0], [1, 3]])))
    special = {**{i: t for i, t in SPECIAL.items() if i != 95}, 98: "<|notimestamps|>"}
    special.update({99 + i: f"<|{i * 0.02:.2f}|>" for i in range(1501)})
    _write_tokenizer_and_extractor(folder, special, 1600)
    return pipeline("automatic-speech-recognition", model=str(folder)), transformers.pipeline(
        "automatic-speech-recognition", model=str(folder))


@pytest.mark.parametrize("seconds,call", [
    (2.0, dict(return_timestamps=True, generate_kwargs={"language": "german", "num_beams": 1})),
    (35.0, dict(generate_kwargs={"language": "en", "num_beams": 1})),   # long-form: generate's seek loop
    # chunked: three 4 s chunks overlapping by 1 s (then the default, 4/6 s), merged by the tokenizer
    (6.0, dict(chunk_length_s=4, stride_length_s=1, generate_kwargs={"language": "en", "num_beams": 1})),
    (6.0, dict(chunk_length_s=4, return_timestamps=True, generate_kwargs={"language": "en", "num_beams": 1})),
    # word timestamps: token times (alignment heads' cross-attention, dynamic time warping) grouped into words;
    # with the pipeline's default 5 beams, and long-form (the second window's words start after 30 s)
    (2.0, dict(return_timestamps="word")),
    (35.0, dict(return_timestamps="word", generate_kwargs={"language": "en", "num_beams": 1})),
])
def test_asr_pipeline_timestamps_and_long_form_match_transformers(timestamp_pipes, seconds, call):
    ours, hf = timestamp_pipes
    audio = _audio(2, seconds)
    expected = hf(audio.copy(), **call)
    assert expected["text"] and (expected["chunks"] if call.get("return_timestamps") else True)
    assert ours(audio, **call) == expected


def test_asr_pipeline_reads_a_file_path_with_soundfile(pipes, tmp_path):
    """A path is read with soundfile (transformers needs the ffmpeg binary for files); the text equals
    transformers' pipeline on the same samples. A stereo file is averaged to mono as transformers does."""
    soundfile = pytest.importorskip("soundfile")
    ours, hf = pipes
    audio = _audio(4, 1.2)
    soundfile.write(tmp_path / "mono.wav", audio, 16000, subtype="FLOAT")  # float32 samples, read back exactly
    soundfile.write(tmp_path / "stereo.wav", np.stack([audio, audio], 1), 16000, subtype="FLOAT")
    call = dict(generate_kwargs={"language": "german", "num_beams": 1})
    expected = hf(audio.copy(), **call)
    assert ours(str(tmp_path / "mono.wav"), **call) == expected
    assert ours(str(tmp_path / "stereo.wav"), **call) == expected
