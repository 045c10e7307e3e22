"""GLM-4-9B-chat's tokenizer (the non-hf repos' `tokenization_chatglm.ChatGLM4Tokenizer`), read natively from a
folder holding its tiktoken rank file `tokenizer.model` and a tokenizer_config.json that lists the 14 special
tokens as added tokens (as the repo's does). Expected ids and text: the `tiktoken` library on the same rank
file with GLM-4's regex, text split at the special tokens first, [gMASK] <sop> in front."""
import json
import os
import re

import numpy as np
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


@pytest.fixture(scope="module")
def model_folder(folder, ranks, tmp_path_factory):
    """A tiny random GLM-4-format checkpoint (model_type chatglm) beside the tokenizer."""
    import shutil

    from mindformers_hf.models.chatglm import ChatGLMConfig
    from mindformers_hf.models.chatglm.modeling_chatglm import ChatGLMForConditionalGeneration

    out = tmp_path_factory.mktemp("glm4_model")
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(folder, name), out / name)
    vocab = -(-(len(ranks) + 14) // 8) * 8
    config = ChatGLMConfig(num_layers=2, padded_vocab_size=vocab, hidden_size=32, ffn_hidden_size=48, kv_channels=8,
                           num_attention_heads=4, multi_query_attention=True, multi_query_group_num=2,
                           seq_length=256, add_qkv_bias=True, eos_token_id=len(ranks), pad_token_id=len(ranks),
                           architectures=["ChatGLMModel"])
    np.random.seed(2)
    ChatGLMForConditionalGeneration(config).save_pretrained(out)
    return str(out)


CONVERSATIONS = {  # (history, query, the published prompt: the repo's template on history + the query turn)
    "one turn": ([], "你好", "[gMASK]<sop><|user|>\n你好<|assistant|>"),
    "multi turn": ([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hello 😀"}], "再见",
                   "[gMASK]<sop><|user|>\n你好<|assistant|>\nHello 😀<|user|>\n再见<|assistant|>"),
    "system prompt": ([{"role": "system", "content": "You are GLM-4."}], "hi",
                      "[gMASK]<sop><|system|>\nYou are GLM-4.<|user|>\nhi<|assistant|>"),
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_greedy_chat_equals_generate(model_folder, enc, ranks, name):
    """glm-4-9b-chat's first revisions' chat(): apply_chat_template(history + query turn), stop at <|endoftext|>,
    <|user|> or <|observation|>, decode without the stop token, process_response."""
    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.models.chatglm.chat_chatglm import process_response

    history, query, prompt = CONVERSATIONS[name]
    tok = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_folder, trust_remote_code=True)
    ids = [expected_ids(enc, ranks, prompt, prefix=False)]
    stops = [len(ranks), len(ranks) + SPECIALS.index("<|user|>"), len(ranks) + SPECIALS.index("<|observation|>")]
    out = model.generate(input_ids=np.array(ids), do_sample=False, max_new_tokens=10, eos_token_id=stops)
    reply = [int(t) for t in out[0, len(ids[0]):]]
    reply = reply[:-1] if reply[-1] in stops else reply
    turns = history + [{"role": "user", "content": query}]
    want = process_response(enc.decode(reply, errors="replace"), turns)
    kept = [dict(m) for m in history]
    assert model.chat(tok, query, history=history, do_sample=False, max_new_tokens=10) == want
    assert history == kept
    assert list(model.stream_chat(tok, query, history, do_sample=False, max_new_tokens=10))[-1] == want


def test_stream_chat_continues_from_the_cache(model_folder, enc, ranks, monkeypatch):
    """glm-4-9b-chat's first revisions' stream_chat with a cache: the template on the query turn alone
    ([gMASK]<sop> again) after the cached tokens; the reply equals generate on the whole token stream."""
    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.models.chatglm.chat_chatglm import process_response
    from tests.models.remote_tokenizer_fixtures import record_forward_lengths

    tok = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_folder, trust_remote_code=True)
    stops = [len(ranks), len(ranks) + SPECIALS.index("<|user|>"), len(ranks) + SPECIALS.index("<|observation|>")]

    def greedy(ids):
        out = model.generate(input_ids=np.array([ids]), do_sample=False, max_new_tokens=6, eos_token_id=stops)
        return [int(t) for t in out[0, len(ids):]]

    def said(reply):
        return enc.decode(reply[:-1] if reply[-1] in stops else reply, errors="replace")

    *_, (_, history, cache) = model.stream_chat(tok, "你好", [], do_sample=False, max_new_tokens=6,
                                                return_past_key_values=True)
    prompt = expected_ids(enc, ranks, "[gMASK]<sop><|user|>\n你好<|assistant|>", prefix=False)
    reply = greedy(prompt)
    held = prompt + reply[:-1]
    assert cache.get_seq_length() == len(held)
    turn = expected_ids(enc, ranks, "[gMASK]<sop><|user|>\nhi<|assistant|>", prefix=False)
    second = greedy(held + turn)
    lengths = record_forward_lengths(monkeypatch, model)
    *_, last = model.stream_chat(tok, "hi", history, past_key_values=cache, do_sample=False, max_new_tokens=6,
                                 return_past_key_values=True)
    assert last == (*process_response(said(second), history + [{"role": "user", "content": "hi"}]), cache)
    assert lengths == [len(turn)] + [1] * (len(second) - 1)


def test_glm4_tool_call_arguments_are_json():
    from mindformers_hf.models.chatglm.chat_chatglm import _json_arguments, process_response

    history = [{"role": "system", "content": "", "tools": [{"name": "get_weather"}]}]
    call, turns = process_response('get_weather\n{"city": "北京"}', history, _json_arguments)
    assert call == {"name": "get_weather", "parameters": {"city": "北京"}}
    assert turns[-1] == {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京"}'}
    with pytest.raises(ValueError, match="JSON"):
        process_response("get_weather\ntool_call(city='x')", history, _json_arguments)
