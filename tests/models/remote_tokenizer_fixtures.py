"""Small vocabularies trained in the test (SentencePiece's trainer) and the text corpus the remote-format
tokenizer tests compare on: Chinese, English, code, emoji, mixed whitespace and special-token strings."""
import io
import json
import os

CORPUS = [
    "你好，世界！今天天气很好。",
    "机器学习和深度学习是人工智能的分支。",
    "Hello world, this is a test of the tokenizer.",
    "def foo(x):\n    return x + 1\n",
    "for i in range(10):\n\tprint(i ** 2)  # square",
    "emoji 😀🎉 mixed 中文 and English 123456",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand   runs   of spaces",
    "",
    " ",
    "\n",
    "ünïcödé façade naïve — “quotes” ‘single’ …",
]

TRAINING_TEXT = [line for line in CORPUS if line.strip()] * 30


def train_sentencepiece(vocab_size=400, **options):
    """A byte-fallback BPE SentencePiece model (as ChatGLM / Baichuan / InternLM ship), as serialized bytes."""
    import sentencepiece as spm

    model = io.BytesIO()
    settings = dict(model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                    remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=1.0,
                    split_digits=True, allow_whitespace_only_pieces=True, minloglevel=2)
    settings.update(options)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TRAINING_TEXT), model_writer=model,
                                   vocab_size=vocab_size, **settings)
    return model.getvalue()


def write_tokenizer_folder(folder, files, tokenizer_config):
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config, f, ensure_ascii=False, indent=2)
    return str(folder)
