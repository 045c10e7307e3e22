"""ChatGLM2's tokenizer, [Round n] prompt format and chat()/stream_chat(): its repos name the same class as
ChatGLM3's (`tokenization_chatglm.ChatGLMTokenizer`); the format is told from the repo's files.

Expected ids come from the `sentencepiece` library on the same tokenizer.model plus the published rules of
THUDM/chatglm2-6b's tokenization_chatglm.py: five special tokens after the SentencePiece vocabulary, a [gMASK] sop
prefix, text encoded whole, decoding through `DecodePieces` with "" for the special tokens, </s>, <s> and <unk>.
The folder's tokenization_chatglm.py holds only the special-token list, written here as the repo declares it
(the detection reads that file as text; it is never run)."""
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from tests.models.remote_tokenizer_fixtures import CORPUS, shuffled_texts, train_sentencepiece, write_tokenizer_folder

SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
SPECIAL_TEXT = ["<|user|>hi<|assistant|>", "[gMASK]sop text eop", "</s><unk><s>", "[Round 1]\n\n问：x\n\n答："]
TOKENIZER_CONFIG = {"name_or_path": "THUDM/chatglm2-6b", "remove_space": False, "do_lower_case": False,
                    "tokenizer_class": "ChatGLMTokenizer",
                    "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]}}
V2_SOURCE = b'special_tokens = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]\n'
V3_SOURCE = V2_SOURCE + b'role_special_tokens = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]\n'


@pytest.fixture(scope="module")
def sp_bytes():
    return train_sentencepiece()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, sp_bytes):
    return write_tokenizer_folder(tmp_path_factory.mktemp("chatglm2"),
                                  {"tokenizer.model": sp_bytes, "tokenization_chatglm.py": V2_SOURCE},
                                  TOKENIZER_CONFIG)


@pytest.fixture(scope="module")
def sp(sp_bytes):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=sp_bytes)


def special_id(sp, token):
    return sp.vocab_size() + SPECIALS.index(token)


def published_decode(sp, ids):
    """convert_id_to_token ("" for the five tokens, </s>, <s>, <unk>), then SentencePiece's DecodePieces."""
    gone = {sp.eos_id(), sp.bos_id(), sp.unk_id()}
    pieces = ["" if i >= sp.vocab_size() or i in gone else sp.id_to_piece(i) for i in ids]
    return sp.decode_pieces(pieces)


def test_the_format_is_read_from_the_repo_files(folder, sp_bytes, tmp_path):
    assert type(AutoTokenizer.from_pretrained(folder, trust_remote_code=True)).__name__ == "ChatGLM2Tokenizer"
    v3 = write_tokenizer_folder(tmp_path / "v3", {"tokenizer.model": sp_bytes, "tokenization_chatglm.py": V3_SOURCE},
                                TOKENIZER_CONFIG)
    tok = AutoTokenizer.from_pretrained(v3)
    assert type(tok).__name__ == "ChatGLMTokenizer" and tok.chat_format == "chatglm3"


def test_ids_and_decoding_equal_sentencepiece(folder, sp):
    tok = AutoTokenizer.from_pretrained(folder)
    prefix = [special_id(sp, "[gMASK]"), special_id(sp, "sop")]
    for text in CORPUS + SPECIAL_TEXT + shuffled_texts(100):
        ids = tok(text)["input_ids"]
        assert ids == prefix + sp.encode(text), text
        assert tok.tokenize(text) == sp.encode_as_pieces(text)
        with_specials = ids + [sp.eos_id(), sp.unk_id(), special_id(sp, "eop")]
        assert tok.decode(with_specials) == published_decode(sp, with_specials), text
        assert tok.decode(with_specials, skip_special_tokens=True) == published_decode(sp, with_specials)
    assert tok("a", "b")["input_ids"] == prefix + sp.encode("a") + sp.encode("b") + [sp.eos_id()]
    assert len(tok) == tok.vocab_size == sp.vocab_size() + 5
    assert (tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (sp.eos_id(), sp.unk_id(), sp.unk_id())
    assert [tok.get_command(t) for t in SPECIALS] == [special_id(sp, t) for t in SPECIALS]
    with pytest.raises(ValueError):
        tok.get_command("<|user|>")  # ChatGLM3's role tokens are not ChatGLM2's
    assert tok.padding_side == "left"


CONVERSATIONS = {
    "one turn": ([], "你好", "[Round 1]\n\n问：你好\n\n答："),
    "multi turn": ([("你好", "Hello! 有什么可以帮你？"), ("def f(x): return x", "ok 😀")], "再见",
                   "[Round 1]\n\n问：你好\n\n答：Hello! 有什么可以帮你？\n\n[Round 2]\n\n问：def f(x): return x\n\n"
                   "答：ok 😀\n\n[Round 3]\n\n问：再见\n\n答："),
}


def as_messages(history, query):
    messages = []
    for old_query, response in history:
        messages += [{"role": "user", "content": old_query}, {"role": "assistant", "content": response}]
    return messages + [{"role": "user", "content": query}]


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_chat_prompt_layout(folder, sp, name):
    tok = AutoTokenizer.from_pretrained(folder)
    history, query, text = CONVERSATIONS[name]
    assert tok.build_prompt(query, history=history) == text
    messages = as_messages(history, query)
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == "[gMASK]sop" + text
    want = [special_id(sp, "[gMASK]"), special_id(sp, "sop")] + sp.encode(text)
    assert tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"] == want
    assert tok([tok.build_prompt(query, history)])["input_ids"][0] == want


def test_a_system_prompt_is_refused(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with pytest.raises(Exception, match="no system prompt"):
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_save_pretrained_keeps_the_format(folder, tmp_path):
    import json

    tok = AutoTokenizer.from_pretrained(folder)
    tok.save_pretrained(tmp_path)
    with open(tmp_path / "tokenizer_config.json") as f:
        saved = json.load(f)
    assert saved["tokenizer_class"] == "ChatGLMTokenizer" and saved["auto_map"] == TOKENIZER_CONFIG["auto_map"]
    again = AutoTokenizer.from_pretrained(tmp_path)  # no tokenization_chatglm.py there: the template tells
    assert type(again).__name__ == "ChatGLM2Tokenizer"
    assert again(CORPUS[5])["input_ids"] == tok(CORPUS[5])["input_ids"]


@pytest.fixture(scope="module")
def model_folder(folder, sp, tmp_path_factory):
    """A tiny random ChatGLM2-format checkpoint beside the tokenizer (eos </s>, as chatglm2-6b's config)."""
    import shutil

    from mindformers_hf.models.chatglm import ChatGLMConfig
    from mindformers_hf.models.chatglm.modeling_chatglm import ChatGLMForConditionalGeneration

    out = tmp_path_factory.mktemp("chatglm2_model")
    for name in ("tokenizer.model", "tokenizer_config.json", "tokenization_chatglm.py"):
        shutil.copy(os.path.join(folder, name), out / name)
    config = ChatGLMConfig(num_layers=2, padded_vocab_size=416, hidden_size=32, ffn_hidden_size=48, kv_channels=8,
                           num_attention_heads=4, multi_query_attention=True, multi_query_group_num=2,
                           seq_length=256, add_qkv_bias=True, eos_token_id=sp.eos_id(), pad_token_id=sp.unk_id(),
                           architectures=["ChatGLMModel"])
    np.random.seed(1)
    ChatGLMForConditionalGeneration(config).save_pretrained(out)
    return str(out)


def test_greedy_chat_equals_generate(model_folder, sp):
    tok = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_folder, trust_remote_code=True)
    history = [("你好", "Hello")]
    prompt = "[Round 1]\n\n问：你好\n\n答：Hello\n\n[Round 2]\n\n问：写一首诗\n\n答："
    ids = np.array([[special_id(sp, "[gMASK]"), special_id(sp, "sop")] + sp.encode(prompt)])
    out = model.generate(input_ids=ids, do_sample=False, max_new_tokens=12)
    reply = published_decode(sp, [int(t) for t in out[0, ids.shape[1]:]]).strip()

    got = model.chat(tok, "写一首诗", history=history, do_sample=False, max_new_tokens=12)
    assert got == (reply, history + [("写一首诗", reply)])
    streamed = list(model.stream_chat(tok, "写一首诗", history, do_sample=False, max_new_tokens=12))
    assert streamed[-1] == got
    assert all(isinstance(r, str) and h[-1] == ("写一首诗", r) for r, h in streamed)


def test_stream_chat_continues_from_the_cache(model_folder, sp, monkeypatch):
    """chatglm2-6b's stream_chat with return_past_key_values / past_key_values: the first round whole, then only
    "\n\n[Round n]\n\n问：...\n\n答：" without its first token (the repo's build_stream_inputs) after the cached
    tokens; the reply equals generate on the whole token stream without a cache."""
    from tests.models.remote_tokenizer_fixtures import record_forward_lengths

    tok = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_folder, trust_remote_code=True)
    opts = {"do_sample": False, "max_new_tokens": 6}

    def greedy(ids):
        out = model.generate(input_ids=np.array([ids]), do_sample=False, max_new_tokens=6)
        return [int(t) for t in out[0, len(ids):]]

    *_, (response, history, cache) = model.stream_chat(tok, "你好", [], return_past_key_values=True, **opts)
    prompt = [special_id(sp, "[gMASK]"), special_id(sp, "sop")] + sp.encode("[Round 1]\n\n问：你好\n\n答：")
    reply = greedy(prompt)
    assert (response, history) == (published_decode(sp, reply).strip(), [("你好", published_decode(sp, reply).strip())])
    assert cache.get_seq_length() == len(prompt) + len(reply) - 1

    held = prompt + reply[:-1]
    turn = sp.encode("\n\n[Round 2]\n\n问：写一首诗\n\n答：")[1:]
    want = published_decode(sp, greedy(held + turn)).strip()
    lengths = record_forward_lengths(monkeypatch, model)
    streamed = list(model.stream_chat(tok, "写一首诗", history, past_key_values=cache, return_past_key_values=True,
                                      **opts))
    assert want and streamed[-1] == (want, history + [("写一首诗", want)], cache)
    assert lengths[0] == len(turn) and set(lengths[1:]) <= {1}
    assert cache.get_seq_length() == len(held + turn) + len(lengths) - 1


def test_stream_chat_refuses_a_tuple_cache(model_folder):
    tok = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModelForCausalLM.from_pretrained(model_folder)
    with pytest.raises(TypeError, match="past_key_values must be the cache"):
        model.stream_chat(tok, "hi", [], past_key_values=((np.zeros(1), np.zeros(1)),))
