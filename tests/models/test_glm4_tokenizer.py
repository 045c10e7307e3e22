"""GLM-4-9B-chat's tokenizer (the non-hf repos' `tokenization_chatglm.ChatGLM4Tokenizer`), read natively from a
folder holding its tiktoken rank file `tokenizer.model` and a tokenizer_config.json that lists the 14 special
tokens as added tokens (as the repo's does). Expected ids and text: the `tiktoken` library on the same rank
file with GLM-4's regex, text split at the special tokens first, [gMASK] <sop> in front."""
import json
import os
import re

import pytest

from mindformers_hf import AutoTokenizer
from tests.models.remote_tokenizer_fixtures import (CORPUS, shuffled_texts, tiktoken_file, train_byte_bpe,
                                                    write_tokenizer_folder)

tiktoken = pytest.importorskip("tiktoken")

PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")  # the published pat_str
SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
            "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
            "<|end_of_video|>"]
SPECIAL_TEXT = ["<|user|>\nhi<|assistant|>", "[gMASK]<sop>text<eop>", "x<|endoftext|>y 1234567"]
# a short chat template in GLM-4's layout (the repo ships its own, longer one, in tokenizer_config.json)
TEMPLATE = ("[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def ranks():
    return train_byte_bpe(PATTERN, merges=300)


@pytest.fixture(scope="module")
def enc(ranks):
    return tiktoken.Encoding("glm4", pat_str=PATTERN, mergeable_ranks=ranks,
                             special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS)})


def tokenizer_config(ranks):
    return {"auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]},
            "tokenizer_class": "ChatGLM4Tokenizer", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "padding_side": "left", "remove_space": False, "do_lower_case": False, "chat_template": TEMPLATE,
            "clean_up_tokenization_spaces": False, "additional_special_tokens": SPECIALS[1:],
            "added_tokens_decoder": {str(len(ranks) + i): {"content": t, "lstrip": False, "normalized": False,
                                                            "rstrip": False, "single_word": False, "special": True}
                                     for i, t in enumerate(SPECIALS)}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, ranks):
    return write_tokenizer_folder(tmp_path_factory.mktemp("glm4"), {"tokenizer.model": tiktoken_file(ranks)},
                                  tokenizer_config(ranks))


def expected_ids(enc, ranks, text, prefix=True):
    ids = [len(ranks) + 2, len(ranks) + 4] if prefix else []
    for part in re.split("(" + "|".join(re.escape(t) for t in SPECIALS) + ")", text):
        if part:
            ids += [len(ranks) + SPECIALS.index(part)] if part in SPECIALS else enc.encode(part, disallowed_special=())
    return ids


def test_ids_and_decoding_equal_tiktoken(folder, enc, ranks):
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert type(tok).__name__ == "ChatGLM4Tokenizer"
    for text in CORPUS + SPECIAL_TEXT:
        ids = tok(text)["input_ids"]
        assert ids == expected_ids(enc, ranks, text), text
        assert tok.decode(ids) == enc.decode(ids), text
        for cut in range(2, len(ids)):
            assert tok.decode(ids[:cut]) == enc.decode(ids[:cut], errors="replace"), (text, cut)
        assert tok.decode(ids, skip_special_tokens=True) == enc.decode([i for i in ids if i < len(ranks)]), text
    for text in shuffled_texts():
        assert tok.encode(text, add_special_tokens=False) == enc.encode(text, disallowed_special=()), text
    assert len(tok) == len(ranks) + 14
    assert (tok.eos_token_id, tok.pad_token_id, tok.padding_side) == (len(ranks), len(ranks), "left")
    assert tok("a", "b")["input_ids"] == expected_ids(enc, ranks, "a") + enc.encode("b") + [len(ranks)]


def test_padding_chat_template_and_save(folder, enc, ranks, tmp_path):
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["你好", "Hello world, this is a test"], padding=True, return_tensors="np")
    a, b = expected_ids(enc, ranks, "你好"), expected_ids(enc, ranks, "Hello world, this is a test")
    pad = len(b) - len(a)
    assert batch["input_ids"].tolist() == [[len(ranks)] * pad + a, b]
    assert batch["position_ids"].tolist() == [[0] * pad + list(range(len(a))), list(range(len(b)))]
    messages = [{"role": "system", "content": "You are GLM-4."}, {"role": "user", "content": "你好 😀"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "[gMASK]<sop><|system|>\nYou are GLM-4.<|user|>\n你好 😀<|assistant|>"
    assert tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"] == \
        expected_ids(enc, ranks, text, prefix=False)
    tok.save_pretrained(tmp_path)
    with open(os.path.join(folder, "tokenizer.model"), "rb") as x, open(tmp_path / "tokenizer.model", "rb") as y:
        assert x.read() == y.read()
    with open(tmp_path / "tokenizer_config.json") as f:
        assert json.load(f)["auto_map"] == tokenizer_config(ranks)["auto_map"]
    assert AutoTokenizer.from_pretrained(tmp_path)(SPECIAL_TEXT[0])["input_ids"] == tok(SPECIAL_TEXT[0])["input_ids"]


def test_chatglm3_chat_refuses_a_glm4_tokenizer(folder):
    from mindformers_hf.models.chatglm.chat_chatglm import ChatGLMChatMixin

    with pytest.raises(NotImplementedError, match="apply_chat_template"):
        ChatGLMChatMixin().chat(AutoTokenizer.from_pretrained(folder), "hi")
