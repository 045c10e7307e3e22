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


def train_byte_bpe(pattern, merges=300):
    """A byte-level BPE vocabulary trained on TRAINING_TEXT, as tiktoken's mergeable ranks {bytes: rank}:
    the 256 bytes first (in a shuffled order, as tiktoken files do not keep byte order), then each merge."""
    import random

    import regex

    words = {}
    for line in TRAINING_TEXT:
        for piece in regex.findall(pattern, line):
            word = tuple(bytes([b]) for b in piece.encode("utf-8"))
            words[word] = words.get(word, 0) + 1
    singles = [bytes([b]) for b in range(256)]
    random.Random(0).shuffle(singles)
    ranks = {token: i for i, token in enumerate(singles)}
    for _ in range(merges):
        pairs = {}
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + count
        if not pairs:
            break
        best = max(sorted(pairs), key=pairs.get)
        ranks[best[0] + best[1]] = len(ranks)
        merged = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return ranks


def tiktoken_file(ranks):
    """The rank file layout of qwen.tiktoken (and GLM-4's tokenizer.model): `base64(token) rank` per line."""
    import base64

    return b"".join(base64.b64encode(token) + b" " + str(rank).encode() + b"\n" for token, rank in ranks.items())


def shuffled_texts(count=300, seed=0):
    """Random splices of the corpus (pieces cut at any character and glued in new orders), so that BPE merges meet
    in contexts the training text never had."""
    import random

    rng = random.Random(seed)
    text = "".join(CORPUS)
    out = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.randint(1, 4)):
            start = rng.randrange(len(text))
            pieces.append(text[start:start + rng.randint(1, 24)])
        out.append("".join(pieces))
    return out


def record_forward_lengths(monkeypatch, model):
    """The input length of every forward of `model` (its class's construct wrapped; the signature is kept, so
    generation passes the same keywords), appended to the returned list."""
    import functools

    lengths, original = [], type(model).construct

    @functools.wraps(original)
    def construct(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        lengths.append(int(ids.shape[1]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "construct", construct)
    return lengths
