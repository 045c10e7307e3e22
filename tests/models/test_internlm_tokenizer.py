"""InternLM (v1)'s tokenizer, chat format and chat()/stream_chat(), read natively from a folder laid out as
internlm-chat-7b's: tokenizer_config.json names `tokenization_internlm.InternLMTokenizer` (no .py file exists),
<eoh> / <eoa> are SentencePiece user-defined pieces listed in added_tokens.json, special_tokens_map.json names
<s> </s> </s>(pad) <unk>.

Expected ids: text split at the added and special tokens, each piece encoded by the `sentencepiece` library, <s>
first. Expected text: transformers 4.x's slow decode, which the published class ran on: <eoh> / <eoa> (added, not
special) kept apart and joined with spaces, each run between them through the published convert_tokens_to_string
(a special token's string after a space unless the previous token was special, clean_up_tokenization).
Prompt strings are internlm-chat-7b's build_inputs layout written out."""
import json
import re

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from tests.models.remote_tokenizer_fixtures import CORPUS, shuffled_texts, train_sentencepiece, write_tokenizer_folder
from tests.models.test_internlm2_tokenizer import expected_text as internlm2_text

ADDED = ["<eoh>", "<eoa>"]
SPECIALS = ["<s>", "</s>", "<unk>"]
SPECIAL_TEXT = ["<|User|>:hi<eoh>\n<|Bot|>:ok<eoa>\n", "x</s><s>y <unk>", "a <eoa> <eoa>b", "<eoa>"]
META = "You are InternLM."


@pytest.fixture(scope="module")
def sp_bytes():
    return train_sentencepiece(add_dummy_prefix=False, user_defined_symbols=ADDED)


@pytest.fixture(scope="module")
def sp(sp_bytes):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=sp_bytes)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, sp_bytes, sp):
    config = {"auto_map": {"AutoTokenizer": ["tokenization_internlm.InternLMTokenizer", None]},
              "tokenizer_class": "InternLMTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "decode_with_prefix_space": False}
    files = {"tokenizer.model": sp_bytes,
             "added_tokens.json": json.dumps({t: sp.piece_to_id(t) for t in ADDED}).encode(),
             "special_tokens_map.json": json.dumps({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>",
                                                    "unk_token": "<unk>"}).encode()}
    return write_tokenizer_folder(tmp_path_factory.mktemp("internlm"), files, config)


SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIALS + ADDED) + ")")


def expected_ids(sp, text):
    ids = [sp.bos_id()]
    for part in SPLIT.split(text):
        if part:
            ids += [sp.piece_to_id(part)] if part in SPECIALS + ADDED else sp.encode(part)
    return ids


def run_text(sp, ids, skip_special):
    """The published convert_tokens_to_string on one run (InternLM2's rule, v1's specials)."""
    return internlm2_text(sp, ids, skip_special, specials=SPECIALS)


def expected_text(sp, ids, skip_special=False):
    added = {sp.piece_to_id(t) for t in ADDED}
    texts, run = [], []
    for i in ids:
        if i in added:
            if run and run_text(sp, run, skip_special):
                texts.append(run_text(sp, run, skip_special))
            texts.append(sp.id_to_piece(i))
            run = []
        else:
            run.append(i)
    if run:
        texts.append(run_text(sp, run, skip_special))
    return " ".join(texts)


def test_ids_and_decoding(folder, sp):
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert type(tok).__name__ == "InternLMTokenizer"
    for text in CORPUS + SPECIAL_TEXT + shuffled_texts(100):
        ids = tok(text)["input_ids"]
        assert ids == expected_ids(sp, text), text
        assert tok.decode(ids) == expected_text(sp, ids), text
        assert tok.decode(ids, skip_special_tokens=True) == expected_text(sp, ids, skip_special=True), text
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (sp.bos_id(), sp.eos_id(), sp.eos_id())
    assert tok.convert_tokens_to_ids(ADDED) == [sp.piece_to_id(t) for t in ADDED]


CONVERSATIONS = {  # (history, query, meta instruction, the published prompt text)
    "one turn": ([], "你好", "", "<|User|>:你好\n<|Bot|>:"),
    "multi turn": ([("你好", "你好！"), ("def f(x):", "    return x 😀")], "再见", "",
                   "<|User|>:你好\n<|Bot|>:你好！<eoa>\n<|User|>:def f(x):\n<|Bot|>:    return x 😀<eoa>\n"
                   "<|User|>:再见\n<|Bot|>:"),
    "system prompt": ([("hi", "ok")], "bye", META,
                      f"<|System|>:{META}\n<|User|>:hi\n<|Bot|>:ok<eoa>\n<|User|>:bye\n<|Bot|>:"),
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_chat_prompt_layout(folder, sp, name):
    from mindformers_hf.models.internlm.chat_internlm import build_prompt

    tok = AutoTokenizer.from_pretrained(folder)
    history, query, meta, text = CONVERSATIONS[name]
    assert build_prompt(tok, query, history, meta) == text
    messages = [{"role": "system", "content": meta}] if meta else []
    for q, r in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    messages.append({"role": "user", "content": query})
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == "<s>" + text
    assert tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"] == expected_ids(sp, text)


@pytest.fixture(scope="module")
def model_folder(folder, sp, tmp_path_factory):
    import os
    import shutil

    from mindformers_hf.models.internlm.configuration_internlm import InternLMConfig
    from mindformers_hf.models.internlm.modeling_internlm import InternLMForCausalLM

    out = tmp_path_factory.mktemp("internlm_model")
    for name in os.listdir(folder):
        shutil.copy(os.path.join(folder, name), out / name)
    config = InternLMConfig(vocab_size=sp.get_piece_size(), hidden_size=32, intermediate_size=48,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
                            architectures=["InternLMForCausalLM"])
    np.random.seed(3)
    InternLMForCausalLM(config).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("meta", ["", META])
def test_greedy_chat_equals_generate(model_folder, sp, meta):
    from mindformers_hf.models.internlm.chat_internlm import META_INSTRUCTION

    tok = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_folder, trust_remote_code=True)
    history = [("你好", "你好！")]
    text = (f"<|System|>:{meta}\n" if meta else "") + "<|User|>:你好\n<|Bot|>:你好！<eoa>\n<|User|>:写一首诗\n<|Bot|>:"
    prompt = np.array([expected_ids(sp, text)])
    stops = [sp.eos_id(), sp.piece_to_id("<eoa>")]
    out = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=10, eos_token_id=stops)
    reply = [int(t) for t in out[0, prompt.shape[1]:]]
    want = expected_text(sp, reply, skip_special=True).split("<eoa>")[0]

    got = model.chat(tok, "写一首诗", history=history, do_sample=False, max_new_tokens=10, meta_instruction=meta)
    assert got == (want, history + [("写一首诗", want)])
    streamed = list(model.stream_chat(tok, "写一首诗", history=history, do_sample=False, max_new_tokens=10,
                                      meta_instruction=meta))
    assert streamed[-1] == got
    assert META_INSTRUCTION.startswith("You are an AI assistant whose name is InternLM")
