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
        name = (filename_prefix + "-" if filename_prefix else "") + self.vocab_files_names["vocab_file"]
        target = os.path.join(save_directory, name) if os.path.isdir(save_directory) else save_directory
        if os.path.abspath(target) != os.path.abspath(self.vocab_file):
            with open(self.vocab_file, "rb") as f:
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
