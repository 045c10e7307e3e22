"""ChatGLM3's tokenizer, chat format and chat()/stream_chat(), read natively from a folder whose
tokenizer_config.json names the repo's `tokenization_chatglm.ChatGLMTokenizer` (no .py file exists).

Expected ids come from the `sentencepiece` library on the same tokenizer.model plus the published rules of
THUDM/chatglm3-6b's tokenization_chatglm.py: nine special tokens after the SentencePiece vocabulary, a
[gMASK] sop prefix, special strings encoded as text unless encode_special_tokens=True, left padding with
position_ids. Prompt strings are written out in the published layout."""
import json
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from tests.models.remote_tokenizer_fixtures import CORPUS, shuffled_texts, train_sentencepiece, write_tokenizer_folder

SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>",
            "<|observation|>"]
SPECIAL_TEXT = ["<|user|>hi<|assistant|>", "[gMASK]sop text eop", "sophisticated <|observation|>", "</s><unk>"]
TOKENIZER_CONFIG = {"auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
                    "tokenizer_class": "ChatGLMTokenizer", "padding_side": "left", "remove_space": False,
                    "do_lower_case": False, "clean_up_tokenization_spaces": False}


@pytest.fixture(scope="module")
def glm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chatglm3")
    return write_tokenizer_folder(folder, {"tokenizer.model": train_sentencepiece()}, TOKENIZER_CONFIG)


@pytest.fixture(scope="module")
def sp(glm_folder):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=os.path.join(glm_folder, "tokenizer.model"))


def special_id(sp, token):
    return sp.vocab_size() + SPECIALS.index(token)


def sp_decode_with_specials(sp, ids):
    """The published SPTokenizer.decode: special tokens as their strings, SentencePiece on the runs between."""
    text, run = "", []
    for i in ids:
        if i >= sp.vocab_size():
            text, run = text + sp.decode(run) + SPECIALS[i - sp.vocab_size()], []
        else:
            run.append(i)
    return text + sp.decode(run)


def test_ids_and_decoding_equal_sentencepiece(glm_folder, sp):
    tok = AutoTokenizer.from_pretrained(glm_folder, trust_remote_code=True)
    assert type(tok).__name__ == "ChatGLMTokenizer"
    prefix = [special_id(sp, "[gMASK]"), special_id(sp, "sop")]
    for text in CORPUS + SPECIAL_TEXT + shuffled_texts(100):
        ids = tok(text)["input_ids"]
        assert ids == prefix + sp.encode(text), text  # special strings are plain text by default
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text)
        assert tok.decode(ids) == sp_decode_with_specials(sp, ids), text
        assert tok.decode(ids, skip_special_tokens=True) == sp.decode(sp.encode(text)), text
        assert tok.tokenize(text) == sp.encode_as_pieces(text)
    assert tok("a", "b")["input_ids"] == prefix + sp.encode("a") + sp.encode("b") + [sp.eos_id()]
    assert len(tok) == tok.vocab_size == sp.vocab_size() + 9
    assert (tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (sp.eos_id(), sp.unk_id(), sp.unk_id())
    assert [tok.convert_tokens_to_ids(t) for t in SPECIALS] == [special_id(sp, t) for t in SPECIALS]
    assert [tok.get_command(t) for t in SPECIALS] == [special_id(sp, t) for t in SPECIALS]


def test_encode_special_tokens_splits_them_out(glm_folder, sp):
    tok = AutoTokenizer.from_pretrained(glm_folder, encode_special_tokens=True)
    ids = tok.encode("<|user|>hi sop<|assistant|>", add_special_tokens=False)
    assert ids == [special_id(sp, "<|user|>")] + sp.encode("hi ") + [special_id(sp, "sop"),
                                                                      special_id(sp, "<|assistant|>")]


def test_left_padding_with_position_ids_and_truncation(glm_folder, sp):
    tok = AutoTokenizer.from_pretrained(glm_folder)
    batch = tok(["你好", "Hello world, this is a test"], padding=True, return_tensors="np")
    long_ids = [special_id(sp, "[gMASK]"), special_id(sp, "sop")] + sp.encode("Hello world, this is a test")
    short = [special_id(sp, "[gMASK]"), special_id(sp, "sop")] + sp.encode("你好")
    pad = len(long_ids) - len(short)
    assert batch["input_ids"].tolist() == [[sp.unk_id()] * pad + short, long_ids]
    assert batch["attention_mask"].tolist() == [[0] * pad + [1] * len(short), [1] * len(long_ids)]
    assert batch["position_ids"].tolist() == [[0] * pad + list(range(len(short))), list(range(len(long_ids)))]
    assert tok("Hello world, this is a test", truncation=True, max_length=5)["input_ids"] == long_ids[:5]
    with pytest.raises(ValueError, match="left"):
        tok(["a", "bb cc"], padding=True, padding_side="right")


CONVERSATIONS = {
    "one turn": ([], "你好", "[gMASK]sop<|user|>\n 你好<|assistant|>"),
    "multi turn": ([{"role": "user", "content": "你好"},
                    {"role": "assistant", "content": "Hello! 有什么可以帮你？"}],
                   "def f(x): return x", "[gMASK]sop<|user|>\n 你好<|assistant|>\n Hello! 有什么可以帮你？"
                   "<|user|>\n def f(x): return x<|assistant|>"),
    "system prompt": ([{"role": "system", "content": "You are ChatGLM3."}], "hi 😀",
                      "[gMASK]sop<|system|>\n You are ChatGLM3.<|user|>\n hi 😀<|assistant|>"),
}
TOOLS = [{"name": "get_weather", "description": "天气", "parameters": {"city": {"type": "string"}}}]
TOOL_HISTORY = [{"role": "system", "content": "Answer with tools.", "tools": TOOLS},
                {"role": "user", "content": "北京天气"},
                {"role": "assistant", "metadata": "get_weather", "content": "```python\ntool_call(city='北京')\n```"}]
TOOL_PROMPT = ("[gMASK]sop<|system|>\n Answer with tools.\n" + json.dumps(TOOLS, indent=4, ensure_ascii=False)
               + "<|user|>\n 北京天气<|assistant|>get_weather\n ```python\ntool_call(city='北京')\n```"
               + "<|observation|>\n {\"temperature\": 20}<|assistant|>")


def expected_chat_ids(sp, history, query, role="user"):
    """The published build_chat_input, on the sentencepiece library."""
    ids = [special_id(sp, "[gMASK]"), special_id(sp, "sop")]
    for item in history + [{"role": role, "content": query}]:
        content = item["content"]
        if item["role"] == "system" and "tools" in item:
            content += "\n" + json.dumps(item["tools"], indent=4, ensure_ascii=False)
        ids += [special_id(sp, f"<|{item['role']}|>")] + sp.encode(item.get("metadata", "") + "\n") + \
            sp.encode(content)
    return ids + [special_id(sp, "<|assistant|>")]


@pytest.mark.parametrize("name", sorted(CONVERSATIONS) + ["tool and observation"])
def test_chat_prompt_layout(glm_folder, sp, name):
    tok = AutoTokenizer.from_pretrained(glm_folder)
    if name == "tool and observation":
        history, query, role, text = TOOL_HISTORY, '{"temperature": 20}', "observation", TOOL_PROMPT
    else:
        (history, query, text), role = CONVERSATIONS[name], "user"
    messages = history + [{"role": role, "content": query}]
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == text
    want = expected_chat_ids(sp, history, query, role)
    assert tok.build_chat_input(query, history=history, role=role, return_tensors="np")["input_ids"][0].tolist() \
        == want
    assert tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"] == want
    assert tok.decode(want) == text


def test_save_pretrained_writes_the_format_back(glm_folder, tmp_path):
    tok = AutoTokenizer.from_pretrained(glm_folder)
    tok.save_pretrained(tmp_path)
    with open(os.path.join(glm_folder, "tokenizer.model"), "rb") as a, open(tmp_path / "tokenizer.model", "rb") as b:
        assert a.read() == b.read()
    with open(tmp_path / "tokenizer_config.json") as f:
        saved = json.load(f)
    assert saved["auto_map"] == TOKENIZER_CONFIG["auto_map"]
    assert (saved["tokenizer_class"], saved["padding_side"]) == ("ChatGLMTokenizer", "left")
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = CORPUS[5]
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.chat_template == tok.chat_template


def test_process_response_text_and_tool_call():
    from mindformers_hf.models.chatglm.chat_chatglm import process_response

    text, history = process_response("\n 你好！", [{"role": "user", "content": "hi"}])
    assert text == "你好！" and history[-1] == {"role": "assistant", "metadata": "", "content": "你好！"}
    call, history = process_response("get_weather\n```python\ntool_call(city='北京', days=3)\n```", TOOL_HISTORY)
    assert call == {"name": "get_weather", "parameters": {"city": "北京", "days": 3}}
    with pytest.raises(ValueError, match="tool_call"):
        process_response("get_weather\n```python\n__import__('os').system('x')\n```", TOOL_HISTORY)


@pytest.fixture(scope="module")
def glm_model_folder(glm_folder, sp, tmp_path_factory):
    """A tiny random ChatGLM3-format checkpoint (our class writes the repo's tensor names) beside the tokenizer."""
    import shutil

    from mindformers_hf.models.chatglm import ChatGLMConfig
    from mindformers_hf.models.chatglm.modeling_chatglm import ChatGLMForConditionalGeneration

    folder = tmp_path_factory.mktemp("chatglm3_model")
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(glm_folder, name), folder / name)
    stops = [sp.eos_id(), special_id(sp, "<|user|>"), special_id(sp, "<|observation|>")]
    config = ChatGLMConfig(num_layers=2, padded_vocab_size=416, hidden_size=32, ffn_hidden_size=48, kv_channels=8,
                           num_attention_heads=4, multi_query_attention=True, multi_query_group_num=2,
                           seq_length=256, add_qkv_bias=True, eos_token_id=sp.eos_id(), pad_token_id=sp.unk_id(),
                           architectures=["ChatGLMModel"],
                           auto_map={"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                                     "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"})
    np.random.seed(0)  # our layers draw new weights from numpy's global RNG
    model = ChatGLMForConditionalGeneration(config)
    model.generation_config.eos_token_id = stops  # as chatglm3-6b's generation_config.json
    model.save_pretrained(folder)
    return str(folder)


def test_greedy_chat_equals_generate(glm_model_folder, sp):
    from mindformers_hf.models.chatglm.chat_chatglm import process_response

    tok = AutoTokenizer.from_pretrained(glm_model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(glm_model_folder, trust_remote_code=True)
    history = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hello"}]
    stops = [sp.eos_id(), special_id(sp, "<|user|>"), special_id(sp, "<|observation|>")]
    prompt = np.array([expected_chat_ids(sp, history, "写一首诗")])
    out = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=12, eos_token_id=stops)
    reply = [int(t) for t in out[0, prompt.shape[1]:]]
    if reply[-1] in stops:
        reply = reply[:-1]
    want = process_response(tok.decode(reply), history + [{"role": "user", "content": "写一首诗"}])

    kept = [dict(m) for m in history]
    got = model.chat(tok, "写一首诗", history=history, do_sample=False, max_new_tokens=12)
    assert got == want
    assert history == kept  # the caller's list is left alone
    streamed = list(model.stream_chat(tok, "写一首诗", history=history, do_sample=False, max_new_tokens=12))
    assert streamed[-1] == want


def test_cli_chat_holds_two_turns(glm_model_folder, monkeypatch, capsys):
    from mindformers_hf.commands import cli

    typed = iter(["你好", "再见", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    prompts = []
    original = cli._load

    def load(args):
        model, tokenizer = original(args)
        real = model.generate

        def recording(**kwargs):
            prompts.append(tokenizer.decode(list(kwargs["input_ids"][0])))
            return real(**kwargs)

        model.generate = recording
        return model, tokenizer

    monkeypatch.setattr(cli, "_load", load)
    assert cli.main(["chat", "--model", glm_model_folder, "--max-new-tokens", "3"]) == 0
    assert len(prompts) == 2
    assert prompts[0] == "[gMASK]sop<|user|>\n 你好<|assistant|>"
    assert prompts[1].startswith("[gMASK]sop<|user|>\n 你好<|assistant|>\n")
    assert prompts[1].endswith("<|user|>\n 再见<|assistant|>")


def test_pipeline_chat_mode(glm_model_folder, sp):
    from mindformers_hf import pipeline

    generator = pipeline("text-generation", model=glm_model_folder, trust_remote_code=True)
    messages = [{"role": "user", "content": "你好"}]
    out = generator(messages, max_new_tokens=4, do_sample=False)
    prompt = np.array([expected_chat_ids(sp, [], "你好")])
    tokens = generator.model.generate(input_ids=prompt, max_new_tokens=4, do_sample=False)[0, prompt.shape[1]:]
    reply = generator.tokenizer.decode(list(tokens), skip_special_tokens=True)
    assert out[0]["generated_text"] == messages + [{"role": "assistant", "content": reply}]


def _greedy_reply(model, ids, stops, **kwargs):
    out = model.generate(input_ids=np.array([ids]), do_sample=False, eos_token_id=stops, **kwargs)
    return [int(t) for t in out[0, len(ids):]]


def test_stream_chat_continues_from_the_cache(glm_model_folder, sp, monkeypatch):
    """stream_chat(return_past_key_values=True) yields the cache; the next turn passed that cache feeds only its
    own tokens -- build_chat_input(query, role) alone, as chatglm3-6b's stream_chat -- at the positions after the
    cached ones, and its reply equals generate on the whole token stream without a cache (repetition_penalty
    included: the logits processors see the earlier turns too)."""
    from mindformers_hf.models.chatglm.chat_chatglm import process_response
    from tests.models.remote_tokenizer_fixtures import record_forward_lengths

    tok = AutoTokenizer.from_pretrained(glm_model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(glm_model_folder, trust_remote_code=True)
    stops = [sp.eos_id(), special_id(sp, "<|user|>"), special_id(sp, "<|observation|>")]
    opts = {"do_sample": False, "max_new_tokens": 7, "repetition_penalty": 1.5}

    first = list(model.stream_chat(tok, "你好", history=[], return_past_key_values=True, **opts))
    response, history, cache = first[-1]
    prompt = expected_chat_ids(sp, [], "你好")
    reply = _greedy_reply(model, prompt, stops, max_new_tokens=7, repetition_penalty=1.5)
    said = reply[:-1] if reply[-1] in stops else reply
    assert (response, history) == process_response(tok.decode(said), [{"role": "user", "content": "你好"}])
    assert all(item[2] is cache for item in first)
    assert cache.get_seq_length() == len(prompt) + len(reply) - 1  # the last token is never fed

    held = prompt + reply[:-1]  # what the cache holds
    turn = expected_chat_ids(sp, [], "写一首诗")  # the repo: [gMASK]sop again, no history
    want_reply = _greedy_reply(model, held + turn, stops, max_new_tokens=7, repetition_penalty=1.5)
    lengths = record_forward_lengths(monkeypatch, model)
    second = list(model.stream_chat(tok, "写一首诗", history=history, past_key_values=cache,
                                    return_past_key_values=True, **opts))
    said = want_reply[:-1] if want_reply[-1] in stops else want_reply
    turns = history + [{"role": "user", "content": "写一首诗"}]
    assert second[-1] == (*process_response(tok.decode(said), turns), cache)
    assert lengths == [len(turn)] + [1] * (len(want_reply) - 1)
    assert cache.get_seq_length() == len(held + turn) + len(want_reply) - 1

    # the cache holds what a fresh forward over the same tokens computes
    monkeypatch.undo()
    fresh = model(input_ids=np.array([held + turn + want_reply[:-1]])).past_key_values
    for mine, theirs in zip(cache.key_cache + cache.value_cache, fresh.key_cache + fresh.value_cache):
        np.testing.assert_allclose(mine.asnumpy(), theirs.asnumpy(), atol=1e-5)


def test_stream_chat_cache_stops_with_the_caller(glm_model_folder, sp, monkeypatch):
    """While the caller holds a yield, generation waits: the yielded cache holds the prompt and the tokens so far
    but the last, and keeps that length when the caller stops iterating; the next turn continues from it."""
    import time

    from tests.models.remote_tokenizer_fixtures import record_forward_lengths

    tok = AutoTokenizer.from_pretrained(glm_model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(glm_model_folder, trust_remote_code=True)
    stream = model.stream_chat(tok, "你好", history=[], do_sample=False, max_new_tokens=30, eos_token_id=[],
                               return_past_key_values=True)
    _, history, cache = next(stream)
    length = cache.get_seq_length()
    time.sleep(0.5)  # a generation running ahead would have fed more tokens by now
    assert cache.get_seq_length() == length
    stream.close()
    assert cache.get_seq_length() == length
    lengths = record_forward_lengths(monkeypatch, model)
    turn = expected_chat_ids(sp, [], "再见")
    *_, last = model.stream_chat(tok, "再见", history=history, past_key_values=cache, do_sample=False,
                                 max_new_tokens=3, return_past_key_values=True)
    assert lengths[0] == len(turn) and last[2].get_seq_length() == length + len(turn) + 2


def test_stream_chat_takes_a_cache_from_a_forward(glm_model_folder, sp, monkeypatch):
    """A cache filled by a plain forward (a prefilled system prompt) is continued too; its token ids are unknown
    to stream_chat, which says so once (they only matter to logits processors that read earlier tokens)."""
    from mindformers_hf.models.chatglm.chat_chatglm import process_response
    from mindformers_hf import utils
    from tests.models.remote_tokenizer_fixtures import record_forward_lengths

    tok = AutoTokenizer.from_pretrained(glm_model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(glm_model_folder, trust_remote_code=True)
    stops = [sp.eos_id(), special_id(sp, "<|user|>"), special_id(sp, "<|observation|>")]
    system = expected_chat_ids(sp, [{"role": "system", "content": "You are helpful."}], "x")[:-4]
    cache = model(input_ids=np.array([system])).past_key_values
    turn = expected_chat_ids(sp, [], "你好")
    reply = _greedy_reply(model, system + turn, stops, max_new_tokens=5)
    said = reply[:-1] if reply[-1] in stops else reply
    warnings = []
    monkeypatch.setattr(utils, "_warned", set())  # warn_once: once per process
    monkeypatch.setattr(utils.logger, "warning", lambda message, *a: warnings.append(message))
    lengths = record_forward_lengths(monkeypatch, model)
    *_, last = model.stream_chat(tok, "你好", past_key_values=cache, do_sample=False, max_new_tokens=5)
    assert last == process_response(tok.decode(said), [{"role": "user", "content": "你好"}])
    assert lengths[0] == len(turn)
    assert len(warnings) == 1 and "not filled by stream_chat" in warnings[0]


def test_stream_chat_refuses_a_tuple_cache(glm_model_folder):
    tok = AutoTokenizer.from_pretrained(glm_model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(glm_model_folder, trust_remote_code=True)
    with pytest.raises(TypeError, match="past_key_values must be the cache"):
        model.stream_chat(tok, "hi", [], past_key_values=((np.zeros(1), np.zeros(1)),))
    with pytest.raises(NotImplementedError, match="chat: past_key_values"):
        model.chat(tok, "hi", [], past_key_values=object())
