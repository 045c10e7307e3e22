"""InternLM2's tokenizer, ChatML format and chat()/stream_chat(), read natively from a folder whose
tokenizer_config.json names the repo's `tokenization_internlm2.InternLM2Tokenizer` (no .py file exists).

The vocabulary is trained in the test with the chat tokens as SentencePiece user-defined pieces (as in
internlm2-chat's tokenizer.model) and tokenizer_config.json lists them as special added tokens, as the repo's
does. Expected ids: text split at the special tokens, each piece encoded by the `sentencepiece` library, <s>
first; expected text: the published decoding rule (special tokens after a space unless the previous token was
special, transformers' clean_up_tokenization)."""
import os
import re

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from tests.models.remote_tokenizer_fixtures import CORPUS, shuffled_texts, train_sentencepiece, write_tokenizer_folder

CHAT_TOKENS = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>", "<|im_start|>"]
SPECIAL_TEXT = ["<|im_start|>user\nhi<|im_end|>\n", "x</s><s>y <unk>", "<|action_start|><|plugin|>\n{}<|action_end|>",
                "Hello , world . It 's done !"]
REPO_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                 "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|im_start|>assistant\\n' }}{% endif %}")  # internlm2-chat-7b's tokenizer_config.json


@pytest.fixture(scope="module")
def sp_bytes():
    return train_sentencepiece(add_dummy_prefix=False, user_defined_symbols=CHAT_TOKENS)


@pytest.fixture(scope="module")
def sp(sp_bytes):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=sp_bytes)


def tokenizer_config(sp):
    special = [sp.unk_id(), sp.bos_id(), sp.eos_id()] + [sp.piece_to_id(t) for t in CHAT_TOKENS]
    return {"auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer",
                                           "tokenization_internlm2_fast.InternLM2TokenizerFast"]},
            "tokenizer_class": "InternLM2Tokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>",
            "unk_token": "<unk>", "additional_special_tokens": CHAT_TOKENS, "chat_template": REPO_TEMPLATE,
            "added_tokens_decoder": {str(i): {"content": sp.id_to_piece(i), "lstrip": False, "normalized": False,
                                              "rstrip": False, "single_word": False, "special": True}
                                     for i in special},
            "clean_up_tokenization_spaces": False, "decode_with_prefix_space": False}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, sp_bytes, sp):
    return write_tokenizer_folder(tmp_path_factory.mktemp("internlm2"), {"tokenizer.model": sp_bytes},
                                  tokenizer_config(sp))


SPECIALS = ["<s>", "</s>", "<unk>"] + CHAT_TOKENS
SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIALS) + ")")


def expected_ids(sp, text):
    ids = [sp.bos_id()]
    for part in SPLIT.split(text):
        if part:
            ids += [sp.piece_to_id(part)] if part in SPECIALS else sp.encode(part)
    return ids


def clean_up(text):
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


def expected_text(sp, ids, skip_special=False, specials=SPECIALS):
    """The published convert_tokens_to_string (InternLM v1's too, with its own specials)."""
    special_ids = {sp.piece_to_id(t) for t in specials}
    text, run, previous = "", [], False
    for i in ids:
        if i in special_ids:
            if not skip_special:
                text += ("" if previous else " ") + sp.decode(run) + sp.id_to_piece(i)
                run, previous = [], True
        else:
            run.append(i)
            previous = False
    return clean_up(text + sp.decode(run))


def test_ids_and_decoding_equal_sentencepiece(folder, sp):
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert type(tok).__name__ == "InternLM2Tokenizer"
    for text in CORPUS + SPECIAL_TEXT + shuffled_texts(100):
        ids = tok(text)["input_ids"]
        assert ids == expected_ids(sp, text), text
        assert tok.decode(ids) == expected_text(sp, ids), text
        assert tok.decode(ids, skip_special_tokens=True) == expected_text(sp, ids, skip_special=True), text
    assert tok("a", "b")["input_ids"] == [sp.bos_id()] + sp.encode("a") + sp.encode("b")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (sp.bos_id(), sp.eos_id(), sp.eos_id())
    assert len(tok) == sp.get_piece_size()
    eos = AutoTokenizer.from_pretrained(folder, add_eos_token=True)
    assert eos("a")["input_ids"] == [sp.bos_id()] + sp.encode("a") + [sp.eos_id()]


def test_padding_and_truncation(folder, sp):
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["你好", "Hello world, this is a test"], padding=True, return_tensors="np")
    a, b = expected_ids(sp, "你好"), expected_ids(sp, "Hello world, this is a test")
    assert tok.padding_side == "right"
    assert batch["input_ids"].tolist() == [a + [sp.eos_id()] * (len(b) - len(a)), b]
    assert tok("Hello world, this is a test", truncation=True, max_length=4)["input_ids"] == b[:4]


def test_chat_prompt_layout(folder, sp):
    from mindformers_hf.models.internlm2.chat_internlm2 import META_INSTRUCTION, build_prompt

    tok = AutoTokenizer.from_pretrained(folder)
    history = [("你好", "你好！"), ("def f(x):", "    return x")]
    text = build_prompt(tok, "emoji 😀", history, META_INSTRUCTION)
    assert text == (f"<|im_start|>system\n{META_INSTRUCTION}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
                    "<|im_start|>assistant\n你好！<|im_end|>\n<|im_start|>user\ndef f(x):<|im_end|>\n"
                    "<|im_start|>assistant\n    return x<|im_end|>\n<|im_start|>user\nemoji 😀<|im_end|>\n"
                    "<|im_start|>assistant\n")
    messages = [{"role": "system", "content": META_INSTRUCTION}]
    for q, r in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    messages.append({"role": "user", "content": "emoji 😀"})
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == "<s>" + text
    assert tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"] == expected_ids(sp, text)
    assert build_prompt(tok, "hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_save_pretrained_writes_the_format_back(folder, tmp_path, sp):
    import json

    tok = AutoTokenizer.from_pretrained(folder)
    tok.save_pretrained(tmp_path)
    with open(os.path.join(folder, "tokenizer.model"), "rb") as a, open(tmp_path / "tokenizer.model", "rb") as b:
        assert a.read() == b.read()
    with open(tmp_path / "tokenizer_config.json") as f:
        saved = json.load(f)
    assert saved["auto_map"] == tokenizer_config(sp)["auto_map"]
    assert saved["tokenizer_class"] == "InternLM2Tokenizer"
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in SPECIAL_TEXT:
        assert again(text)["input_ids"] == tok(text)["input_ids"]


def test_greedy_chat_equals_generate(folder, sp, tmp_path):
    import shutil

    from mindformers_hf.models.internlm2.chat_internlm2 import META_INSTRUCTION, build_prompt
    from mindformers_hf.models.internlm2.configuration_internlm2 import InternLM2Config
    from mindformers_hf.models.internlm2.modeling_internlm2 import InternLM2ForCausalLM

    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(folder, name), tmp_path / name)
    config = InternLM2Config(vocab_size=sp.get_piece_size(), hidden_size=32, intermediate_size=48,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=512, architectures=["InternLM2ForCausalLM"],
                             auto_map={"AutoConfig": "configuration_internlm2.InternLM2Config",
                                       "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"})
    np.random.seed(0)  # our layers draw new weights from numpy's global RNG
    InternLM2ForCausalLM(config).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), trust_remote_code=True)

    history = [("你好", "你好！")]
    prompt = np.array([expected_ids(sp, build_prompt(tok, "写一首诗", history, META_INSTRUCTION))])
    stops = [sp.eos_id(), sp.piece_to_id("<|im_end|>")]
    out = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=10, eos_token_id=stops)
    reply = [int(t) for t in out[0, prompt.shape[1]:]]
    want = expected_text(sp, reply, skip_special=True).split("<|im_end|>")[0]

    response, new_history = model.chat(tok, "写一首诗", history=history, do_sample=False, max_new_tokens=10)
    assert response == want and new_history == history + [("写一首诗", want)]
    streamed = list(model.stream_chat(tok, "写一首诗", history=history, do_sample=False, max_new_tokens=10))
    assert streamed[-1] == (want, history + [("写一首诗", want)])
