"""Native tokenizers for the remote-code formats (ChatGLM3, Qwen v1, InternLM2, Baichuan2): built from the repo's
own vocabulary file when `tokenizer_config.json`'s `auto_map` names the repo's tokenizer class; no repo code runs.

Each format's class lives beside its model (models/<family>/tokenization_<family>.py) and keeps the published
class name, file names, special-token ids and rules; `save_pretrained` writes the same vocabulary file and
`auto_map` back, so the original remote code loads our output.
"""
import importlib
import json
import os

from transformers.tokenization_python import PythonBackend

# the repo class auto_map["AutoTokenizer"] names ("module.Class", as published) -> "module:Class" of ours
REMOTE_TOKENIZERS = {
    "tokenization_chatglm.ChatGLMTokenizer": "mindformers_hf.models.chatglm.tokenization_chatglm:ChatGLMTokenizer",
    "tokenization_qwen.QWenTokenizer": "mindformers_hf.models.qwen.tokenization_qwen:QWenTokenizer",
    "tokenization_internlm2.InternLM2Tokenizer":
        "mindformers_hf.models.internlm2.tokenization_internlm2:InternLM2Tokenizer",
    "tokenization_internlm2_fast.InternLM2TokenizerFast":
        "mindformers_hf.models.internlm2.tokenization_internlm2:InternLM2Tokenizer",
}

_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")


def remote_tokenizer_class(name_or_path, kwargs):
    """Our class for a tokenizer whose tokenizer_config.json names remote code of a format we read, else None."""
    from transformers.utils import cached_file

    hub = {key: kwargs[key] for key in _HUB_KWARGS if kwargs.get(key) is not None}
    try:
        path = cached_file(name_or_path, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub)
    except (OSError, ValueError):
        return None
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            auto_map = json.load(f).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return None
    named = auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else auto_map
    names = [named] if isinstance(named, str) else [n for n in (named or []) if n]
    for name in names:
        target = REMOTE_TOKENIZERS.get(name.split("--")[-1])  # "org/repo--module.Class" names another repo
        if target:
            module, cls = target.split(":")
            return getattr(importlib.import_module(module), cls)
    return None


class RemoteFormatTokenizer(PythonBackend):
    """What the native remote-format tokenizers share: the repo's `auto_map` is kept (and saved back), the vocabulary
    file is copied as it is, and tokens cannot be added (the formats' vocabularies and special ids are fixed)."""

    def __init__(self, auto_map=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(auto_map, (list, tuple)):
            auto_map = {"AutoTokenizer": list(auto_map)}
        self._auto_map = auto_map

    def _add_tokens(self, new_tokens, special_tokens=False):
        vocab = self.get_vocab()
        unknown = [str(t) for t in new_tokens or [] if str(t) and str(t) not in vocab]
        if unknown:
            raise ValueError(f"{type(self).__name__} (a native reading of the repo's tokenizer) cannot add tokens "
                             f"to its fixed vocabulary: {unknown[:5]}")
        return super()._add_tokens(new_tokens, special_tokens=special_tokens)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        return copy_vocabulary_file(self, save_directory, filename_prefix)


def copy_vocabulary_file(tokenizer, save_directory, filename_prefix=None):
    """save_vocabulary of these formats: the repo's vocabulary file, byte for byte (written atomically)."""
    name = (filename_prefix + "-" if filename_prefix else "") + tokenizer.vocab_files_names["vocab_file"]
    target = os.path.join(save_directory, name) if os.path.isdir(save_directory) else save_directory
    if os.path.abspath(target) != os.path.abspath(tokenizer.vocab_file):
        with open(tokenizer.vocab_file, "rb") as f:
            data = f.read()
        tmp = target + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return (target,)


def load_sentencepiece(path):
    try:
        import sentencepiece
    except ImportError:
        raise ImportError("this tokenizer reads the repo's SentencePiece tokenizer.model with the `sentencepiece` "
                          "package: pip install sentencepiece") from None
    return sentencepiece.SentencePieceProcessor(model_file=path)


# ---------------------------------------------------------------------------------------------- tiktoken files
def read_tiktoken_ranks(path):
    """A tiktoken rank file (qwen.tiktoken, GLM-4's tokenizer.model): `base64(token) rank` per line."""
    import base64

    ranks = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise ValueError(f"{path}, line {number}: not a tiktoken rank line (base64 token, space, rank)") \
                    from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: the ranks are not 0..{len(ranks) - 1}, each once")
    return ranks


def _last_merge(ranks, token, max_rank):
    """tiktoken's byte-pair merging of `token` with the ranks below its own: the two parts it is merged from."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def tiktoken_backend(ranks, pattern, special_tokens, nfc=False):
    """A `tokenizers.Tokenizer` giving tiktoken's ids: byte-level BPE whose merges are the ranks (each token's
    last merge, in rank order), `ignore_merges` as tiktoken takes a piece that is itself a token whole, the
    format's split regex, and the special tokens after the ranks, in order."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_char = bytes_to_unicode()
    as_text = lambda token: "".join(byte_char[b] for b in token)  # noqa: E731
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _last_merge(ranks, token, rank)
            if len(parts) == 2:
                merges.append((as_text(parts[0]), as_text(parts[1])))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False,
                                   byte_fallback=False))
    if nfc:
        backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    return backend
