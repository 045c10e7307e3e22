"""Qwen (v1)'s tokenizer, chatml format and chat()/chat_stream(), read natively from a folder whose
tokenizer_config.json names the repo's `tokenization_qwen.QWenTokenizer` (no .py file exists).

Expected ids and text come from the `tiktoken` library on the same rank file (qwen.tiktoken's layout, trained
in the test) with the published Qwen regex, NFC normalisation and the 208 special tokens after the ranks;
prompt strings and ids follow the published make_context."""
import json
import os
import unicodedata

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from tests.models.remote_tokenizer_fixtures import (CORPUS, shuffled_texts, tiktoken_file, train_byte_bpe,
                                                    write_tokenizer_folder)

tiktoken = pytest.importorskip("tiktoken")

PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
           r"""\s+(?!\S)|\s+""")  # the published PAT_STR
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]
SPECIAL_TEXT = ["<|im_start|>user\nhi<|im_end|>\n", "<|extra_204|><|endoftext|>x<|extra_0|>", "e\u0301 café ﬁ",
                "It's we'LL <|im_end", "  \n\n  x\r\n"]
TOKENIZER_CONFIG = {"auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
                    "tokenizer_class": "QWenTokenizer", "model_max_length": 8192}


@pytest.fixture(scope="module")
def ranks():
    return train_byte_bpe(PATTERN, merges=300)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory, ranks):
    folder = tmp_path_factory.mktemp("qwen")
    return write_tokenizer_folder(folder, {"qwen.tiktoken": tiktoken_file(ranks)}, TOKENIZER_CONFIG)


@pytest.fixture(scope="module")
def enc(ranks):
    return tiktoken.Encoding("Qwen", pat_str=PATTERN, mergeable_ranks=ranks,
                             special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS)})


def test_ids_and_decoding_equal_tiktoken(qwen_folder, enc, ranks):
    tok = AutoTokenizer.from_pretrained(qwen_folder, trust_remote_code=True)
    assert type(tok).__name__ == "QWenTokenizer" and tok.is_fast
    for text in CORPUS + SPECIAL_TEXT:
        normal = unicodedata.normalize("NFC", text)
        want = enc.encode(normal, allowed_special="all")
        assert tok(text)["input_ids"] == want, text
        assert tok.encode(text, allowed_special=set()) == enc.encode(normal, allowed_special=set(),
                                                                     disallowed_special=()), text
        assert tok.decode(want) == enc.decode(want), text
        for cut in range(len(want)):  # partial UTF-8 sequences are replaced as tiktoken's errors="replace"
            assert tok.decode(want[:cut]) == enc.decode(want[:cut], errors="replace"), (text, cut)
        kept = [i for i in want if i < len(ranks)]
        assert tok.decode(want, skip_special_tokens=True) == enc.decode(kept), text
    spliced = shuffled_texts()
    assert tok(spliced)["input_ids"] == [enc.encode(unicodedata.normalize("NFC", t)) for t in spliced]
    assert len(tok) == len(ranks) + 208
    assert (tok.eod_id, tok.im_start_id, tok.im_end_id) == (len(ranks), len(ranks) + 1, len(ranks) + 2)
    assert tok.eos_token is None and tok.pad_token is None and tok.padding_side == "right"
    offsets = tok("Hello world", return_offsets_mapping=True)["offset_mapping"]
    pieces = [enc.decode([i]) for i in enc.encode("Hello world")]
    assert ["Hello world"[a:b] for a, b in offsets] == pieces


def test_padding_truncation_and_fixed_vocabulary(qwen_folder, enc):
    tok = AutoTokenizer.from_pretrained(qwen_folder)
    tok.pad_token = "<|endoftext|>"  # what Qwen's finetuning scripts do
    batch = tok(["你好", "Hello world, this is a test"], padding=True, return_tensors="np")
    a, b = enc.encode("你好"), enc.encode("Hello world, this is a test")
    assert batch["input_ids"].tolist() == [a + [tok.eod_id] * (len(b) - len(a)), b]
    assert batch["attention_mask"].tolist() == [[1] * len(a) + [0] * (len(b) - len(a)), [1] * len(b)]
    assert tok("Hello world, this is a test", truncation=True, max_length=3)["input_ids"] == b[:3]
    with pytest.raises(ValueError, match="cannot add tokens"):
        tok.add_tokens(["brand-new"])


def expected_context(enc, history, query, system="You are a helpful assistant."):
    """The published make_context (chatml), on tiktoken."""
    nl = enc.encode("\n")
    ids = lambda s: enc.encode(s, allowed_special=set(), disallowed_special=())  # noqa: E731
    start, end = enc.encode("<|im_start|>", allowed_special="all"), enc.encode("<|im_end|>", allowed_special="all")
    out = start + ids("system") + nl + ids(system) + end
    for q, r in history:
        out += nl + start + ids("user") + nl + ids(q) + end + nl + start + ids("assistant") + nl + ids(r) + end
    return out + nl + start + ids("user") + nl + ids(query) + end + nl + start + ids("assistant") + nl


HISTORY = [("你好", "你好！有什么可以帮你？"), ("def f(x):", "    return x")]
PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
          "<|im_start|>assistant\n你好！有什么可以帮你？<|im_end|>\n<|im_start|>user\ndef f(x):<|im_end|>\n"
          "<|im_start|>assistant\n    return x<|im_end|>\n<|im_start|>user\nemoji 😀<|im_end|>\n"
          "<|im_start|>assistant\n")


def messages_of(history, query, system=None):
    out = [{"role": "system", "content": system}] if system else []
    for q, r in history:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    return out + [{"role": "user", "content": query}]


def test_chat_prompt_layout(qwen_folder, enc):
    from mindformers_hf.models.qwen.chat_qwen import make_context

    tok = AutoTokenizer.from_pretrained(qwen_folder)
    text, ids = make_context(tok, "emoji 😀", HISTORY, system="You are a helpful assistant.")
    assert text == PROMPT and ids == expected_context(enc, HISTORY, "emoji 😀")
    assert tok.apply_chat_template(messages_of(HISTORY, "emoji 😀"), add_generation_prompt=True,
                                   tokenize=False) == PROMPT
    assert tok.apply_chat_template(messages_of(HISTORY, "emoji 😀"), add_generation_prompt=True)["input_ids"] == \
        expected_context(enc, HISTORY, "emoji 😀")
    one = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert make_context(tok, "hi", [], system="Be brief.")[0] == one
    assert tok.apply_chat_template(messages_of([], "hi", "Be brief."), add_generation_prompt=True,
                                   tokenize=False) == one
    # history that does not fit max_window_size is dropped from the oldest turn on
    _, short = make_context(tok, "emoji 😀", HISTORY, system="x", max_window_size=len(expected_context(
        enc, HISTORY[1:], "emoji 😀", "x")) - 2)
    assert short == expected_context(enc, HISTORY[1:], "emoji 😀", "x")


def test_save_pretrained_writes_the_format_back(qwen_folder, tmp_path):
    tok = AutoTokenizer.from_pretrained(qwen_folder)
    tok.save_pretrained(tmp_path)
    with open(os.path.join(qwen_folder, "qwen.tiktoken"), "rb") as a, open(tmp_path / "qwen.tiktoken", "rb") as b:
        assert a.read() == b.read()
    with open(tmp_path / "tokenizer_config.json") as f:
        saved = json.load(f)
    assert saved["auto_map"] == TOKENIZER_CONFIG["auto_map"] and saved["tokenizer_class"] == "QWenTokenizer"
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(CORPUS[5])["input_ids"] == tok(CORPUS[5])["input_ids"]


def test_greedy_chat_equals_generate(qwen_folder, enc, ranks, tmp_path):
    import shutil

    from transformers import GenerationConfig

    from mindformers_hf.models.qwen import QWenConfig
    from mindformers_hf.models.qwen.modeling_qwen import QWenLMHeadModel

    for name in ("qwen.tiktoken", "tokenizer_config.json"):
        shutil.copy(os.path.join(qwen_folder, name), tmp_path / name)
    config = QWenConfig(vocab_size=len(ranks) + 208, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        kv_channels=8, intermediate_size=64, seq_length=256, max_position_embeddings=256,
                        architectures=["QWenLMHeadModel"],
                        auto_map={"AutoConfig": "configuration_qwen.QWenConfig",
                                  "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"})
    np.random.seed(0)  # our layers draw new weights from numpy's global RNG
    model = QWenLMHeadModel(config)
    model.generation_config = GenerationConfig(chat_format="chatml", eos_token_id=len(ranks), pad_token_id=len(ranks),
                                               max_window_size=6144)  # as Qwen-7B-Chat's generation_config.json
    model.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), trust_remote_code=True)
    assert model.generation_config.chat_format == "chatml"

    prompt = np.array([expected_context(enc, HISTORY, "写一首诗")])
    stops = [tok.im_end_id, tok.im_start_id, tok.eod_id]
    out = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=10, eos_token_id=stops)
    reply = [int(t) for t in out[0, prompt.shape[1]:]]
    reply = reply[:next((i for i, t in enumerate(reply) if t in stops), len(reply))]
    want = enc.decode(reply).strip()

    response, history = model.chat(tok, "写一首诗", history=HISTORY, do_sample=False, max_new_tokens=10)
    assert response == want and history == HISTORY + [("写一首诗", want)]
    streamed = list(model.chat_stream(tok, "写一首诗", history=HISTORY, do_sample=False, max_new_tokens=10))
    assert streamed[-1] == enc.decode([i for i in reply if i < len(ranks)]).rstrip("\ufffd")  # specials skipped


# ------------------------------------------------------------------------------------------------ Qwen-VL
VL_TAGS = ["<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>"]
VL_TEXT = ["Picture 1: <img>https://x.org/a b.jpg</img>\nWhat is this?", "<img>照片/猫.png</img><img>b</img>",
           "a <ref>dog</ref><box>(1,2),(3,4)</box> <|im_end|>", "no image </img> here"]


def published_vl_ids(enc, ranks, text, allowed_special="all"):
    """The published Qwen-VL tokenize on tiktoken: encode, then each <img> ... </img> (the first </img> after it):
    the inner tokens' bytes, each byte b mapped to the token of rank b and back to its id, <imgpad> up to 256."""
    ids = enc.encode(unicodedata.normalize("NFC", text), allowed_special=allowed_special, disallowed_special=())
    start, end, pad = (enc.encode(t, allowed_special="all")[0] for t in ("<img>", "</img>", "<imgpad>"))
    by_rank = {rank: token for token, rank in ranks.items()}
    out, n = [], 0
    while start in ids[n:]:
        a = ids.index(start, n)
        b = ids.index(end, a)
        url = b"".join(enc.decode_single_token_bytes(t) for t in ids[a + 1:b])
        inner = [ranks[by_rank[byte]] for byte in url]
        out += ids[n:a] + [start] + inner + [pad] * (256 - len(inner)) + [end]
        n = b + 1
    return out + ids[n:]


@pytest.fixture(scope="module")
def vl_enc(ranks):
    return tiktoken.Encoding("QwenVL", pat_str=PATTERN, mergeable_ranks=ranks,
                             special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS + VL_TAGS)})


@pytest.fixture(scope="module")
def vl_folder(tmp_path_factory, ranks):
    """A Qwen-VL folder: the tokenizer files beside a config.json with a `visual` section."""
    folder = write_tokenizer_folder(tmp_path_factory.mktemp("qwen_vl"), {"qwen.tiktoken": tiktoken_file(ranks)},
                                    TOKENIZER_CONFIG)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "qwen", "visual": {"image_start_id": len(ranks) + 208 + 6, "image_size": 448}}, f)
    return folder


def test_qwen_vl_image_spans_equal_the_published_rewrite(vl_folder, vl_enc, ranks, tmp_path):
    from mindformers_hf import QWenVLImageProcessor

    tok = AutoTokenizer.from_pretrained(vl_folder)
    assert type(tok).__name__ == "QWenTokenizer" and type(tok).qwen_vl  # chosen from the repo's config.json
    assert len(tok) == len(ranks) + 217 and tok.img_start_id == len(ranks) + 214
    for text in VL_TEXT + CORPUS[:3]:
        want = published_vl_ids(vl_enc, ranks, text)
        assert tok(text)["input_ids"] == want, text
        assert tok.encode(text) == want and tok.convert_tokens_to_ids(tok.tokenize(text)) == want, text
        assert tok.encode(text, allowed_special=set()) == published_vl_ids(vl_enc, ranks, text, set()), text
        image_st = set(tok.IMAGE_ST)  # as Qwen-VL-Chat's make_context encodes messages
        assert image_st == set(VL_TAGS)
        assert tok.encode(text, allowed_special=image_st) == published_vl_ids(vl_enc, ranks, text, image_st), text
    tok.pad_token = "<|endoftext|>"
    batch = tok(VL_TEXT[:2], padding=True, return_tensors="np")
    rows = [published_vl_ids(vl_enc, ranks, t) for t in VL_TEXT[:2]]
    width = max(map(len, rows))
    assert batch["input_ids"].tolist() == [r + [tok.eod_id] * (width - len(r)) for r in rows]
    assert batch["attention_mask"].tolist() == [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    # decoding reads a span back as its path; the model's processor reads the same paths from the ids
    assert tok.decode(tok(VL_TEXT[1])["input_ids"]) == unicodedata.normalize("NFC", VL_TEXT[1])
    processor = QWenVLImageProcessor.from_pretrained(vl_folder)
    assert processor.image_paths(batch["input_ids"]) == ["https://x.org/a b.jpg", "照片/猫.png", "b"]
    text = tok.from_list_format([{"image": "a.png"}, {"text": "Where?"}, {"ref": "dog", "box": [(1, 2, 3, 4)]}])
    assert text == "Picture 1: <img>a.png</img>\nWhere?<ref>dog</ref><box>(1,2),(3,4)</box>"
    with pytest.raises(ValueError, match="too long"):
        tok("<img>" + "x" * 257 + "</img>")
    with pytest.raises(ValueError, match="Unclosed image token"):
        tok("<img>a.png")
    # saved, the tokenizer config names the image tags: the folder reloads as Qwen-VL without a model config
    tok.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()
    assert AutoTokenizer.from_pretrained(tmp_path)(VL_TEXT[0])["input_ids"] == published_vl_ids(vl_enc, ranks,
                                                                                                VL_TEXT[0])
