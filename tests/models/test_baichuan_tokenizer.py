"""Baichuan2's tokenizer, chat format and chat(), read natively from a folder whose tokenizer_config.json names
the repo's `tokenization_baichuan.BaichuanTokenizer` (no .py file exists), configured as Baichuan2-7B-Chat's
(no <s> added, pad <unk>).

The vocabulary is trained in the test with the reserved tokens as SentencePiece user-defined pieces placed at
ids 195 / 196 (the Chat models' user_token_id / assistant_token_id). Expected ids: the `sentencepiece` library
on each piece between special tokens; expected text: the published LLaMA-style decoding rule; prompt ids: the
published build_chat_input."""
import json
import os
import re

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from tests.models.remote_tokenizer_fixtures import CORPUS, shuffled_texts, train_sentencepiece, write_tokenizer_folder

RESERVED = [f"<filler_{i}>" for i in range(3, 195)] + ["<reserved_106>", "<reserved_107>"]
USER, ASSISTANT = 195, 196
SPECIAL_TEXT = ["<reserved_106>你好<reserved_107>", "x</s><s>y <unk>z", "Hello , world ."]
TOKENIZER_CONFIG = {"auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]},
                    "tokenizer_class": "BaichuanTokenizer", "add_bos_token": False, "add_eos_token": False,
                    "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>",
                    "clean_up_tokenization_spaces": False, "model_max_length": 4096, "sp_model_kwargs": {}}


@pytest.fixture(scope="module")
def sp_bytes():
    return train_sentencepiece(vocab_size=700, add_dummy_prefix=False, user_defined_symbols=RESERVED)


@pytest.fixture(scope="module")
def sp(sp_bytes):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=sp_bytes)
    assert processor.id_to_piece(USER) == "<reserved_106>" and processor.id_to_piece(ASSISTANT) == "<reserved_107>"
    return processor


@pytest.fixture(scope="module")
def folder(tmp_path_factory, sp_bytes):
    return write_tokenizer_folder(tmp_path_factory.mktemp("baichuan2"), {"tokenizer.model": sp_bytes},
                                  TOKENIZER_CONFIG)


SPECIALS = ["<s>", "</s>", "<unk>"]
SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIALS) + ")")


def expected_ids(sp, text):
    ids = []
    for part in SPLIT.split(text):
        if part:
            ids += [sp.piece_to_id(part)] if part in SPECIALS else sp.encode(part)
    return ids


def expected_text(sp, ids, skip_special=False):
    specials = {sp.unk_id(), sp.bos_id(), sp.eos_id()}
    text, run, previous = "", [], False
    for position, i in enumerate(ids):
        if i in specials:
            if not skip_special:
                text += (" " if not previous and position != 0 else "") + sp.decode(run) + sp.id_to_piece(i)
                run, previous = [], True
        else:
            run.append(i)
            previous = False
    return text + sp.decode(run)


def test_ids_and_decoding_equal_sentencepiece(folder, sp):
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert type(tok).__name__ == "BaichuanTokenizer"
    for text in CORPUS + SPECIAL_TEXT + shuffled_texts(100):
        ids = tok(text)["input_ids"]
        assert ids == expected_ids(sp, text), text
        assert tok.decode(ids) == expected_text(sp, ids), text
        assert tok.decode(ids, skip_special_tokens=True) == expected_text(sp, ids, skip_special=True), text
    assert (tok.pad_token_id, tok.eos_token_id, tok.padding_side) == (sp.unk_id(), sp.eos_id(), "right")
    with_bos = AutoTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=True)
    assert with_bos("a", "b")["input_ids"] == [1] + sp.encode("a") + [2, 1] + sp.encode("b") + [2]


def test_padding_and_truncation(folder, sp):
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["你好", "Hello world, this is a test"], padding=True, return_tensors="np")
    a, b = sp.encode("你好"), sp.encode("Hello world, this is a test")
    assert batch["input_ids"].tolist() == [a + [sp.unk_id()] * (len(b) - len(a)), b]
    assert tok("Hello world, this is a test", truncation=True, max_length=4)["input_ids"] == b[:4]


MESSAGES = [{"role": "system", "content": "你是百川。"}, {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！"}, {"role": "user", "content": "def f(x): 😀"}]


def expected_chat_ids(sp, messages):
    ids = sp.encode(messages[0]["content"]) if messages[0]["role"] == "system" else []
    for m in messages:
        if m["role"] != "system":
            ids += [USER if m["role"] == "user" else ASSISTANT] + sp.encode(m["content"])
    return ids + [ASSISTANT]


class _Model:  # what build_chat_input reads of a model
    class generation_config:
        user_token_id, assistant_token_id, max_new_tokens = USER, ASSISTANT, 2048

    class config:
        model_max_length = 4096


def test_chat_prompt_layout(folder, sp):
    from mindformers_hf.models.baichuan.chat_baichuan import build_chat_input

    tok = AutoTokenizer.from_pretrained(folder)
    text = "你是百川。<reserved_106>你好<reserved_107>你好！<reserved_106>def f(x): 😀<reserved_107>"
    assert tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == text
    want = expected_chat_ids(sp, MESSAGES)
    assert tok.apply_chat_template(MESSAGES, add_generation_prompt=True)["input_ids"] == want
    assert build_chat_input(_Model, tok, MESSAGES) == want
    # rounds that do not fit model_max_length - max_new_tokens are dropped from the oldest on
    last_round = [USER] + sp.encode(MESSAGES[3]["content"]) + [ASSISTANT]
    limit = len(sp.encode(MESSAGES[0]["content"])) + len(last_round) + 1
    assert build_chat_input(_Model, tok, MESSAGES, max_new_tokens=4096 - limit) == \
        sp.encode(MESSAGES[0]["content"]) + last_round


def test_save_pretrained_writes_the_format_back(folder, tmp_path):
    tok = AutoTokenizer.from_pretrained(folder)
    tok.save_pretrained(tmp_path)
    with open(os.path.join(folder, "tokenizer.model"), "rb") as a, open(tmp_path / "tokenizer.model", "rb") as b:
        assert a.read() == b.read()
    with open(tmp_path / "tokenizer_config.json") as f:
        saved = json.load(f)
    assert saved["auto_map"] == TOKENIZER_CONFIG["auto_map"] and saved["add_bos_token"] is False
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(CORPUS[5])["input_ids"] == tok(CORPUS[5])["input_ids"]


def test_greedy_chat_equals_generate(folder, sp, tmp_path):
    import shutil

    from transformers import GenerationConfig

    from mindformers_hf.models.baichuan.configuration_baichuan import BaichuanConfig
    from mindformers_hf.models.baichuan.modeling_baichuan import BaichuanForCausalLM

    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(folder, name), tmp_path / name)
    config = BaichuanConfig(vocab_size=sp.get_piece_size(), hidden_size=32, intermediate_size=48,
                            num_hidden_layers=2, num_attention_heads=4, model_max_length=512,
                            position_embedding="rope",  # Baichuan2-7B (rotary)
                            architectures=["BaichuanForCausalLM"],
                            auto_map={"AutoConfig": "configuration_baichuan.BaichuanConfig",
                                      "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"})
    np.random.seed(0)  # our layers draw new weights from numpy's global RNG
    model = BaichuanForCausalLM(config)
    model.generation_config = GenerationConfig(  # as Baichuan2-7B-Chat's generation_config.json, but greedy
        bos_token_id=1, eos_token_id=2, pad_token_id=0, user_token_id=USER, assistant_token_id=ASSISTANT,
        max_new_tokens=10, do_sample=False)
    model.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), trust_remote_code=True)
    assert model.generation_config.user_token_id == USER

    prompt = np.array([expected_chat_ids(sp, MESSAGES)])
    out = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=10)
    want = expected_text(sp, [int(t) for t in out[0, prompt.shape[1]:]], skip_special=True)
    assert model.chat(tok, MESSAGES) == want
    assert list(model.chat(tok, MESSAGES, stream=True))[-1] == want
