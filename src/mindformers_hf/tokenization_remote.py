"""Native tokenizers for the remote-code formats (ChatGLM3, GLM-4, Qwen v1, InternLM/InternLM2, Baichuan/Baichuan2):
built from the repo's own vocabulary file when `tokenizer_config.json`'s `auto_map` names the repo's tokenizer
class; no repo code runs.

Each format's class lives beside its model (models/<family>/tokenization_<family>.py) and keeps the published
class name, file names, special-token ids and rules; `save_pretrained` writes the same vocabulary file and
`auto_map` back, so the original remote code loads our output. Here: the auto_map table and look-up, what the
classes share (RemoteFormatTokenizer, the LLaMA-style SentencePieceTokenizer) and the tiktoken rank-file reader
and its exact `tokenizers` BPE.
"""
import importlib
import json
import os

from transformers.tokenization_python import PythonBackend

# the repo class auto_map["AutoTokenizer"] names ("module.Class", as published) -> "module:Class" of ours, or
# "module:function" when one published name covers several formats: function(name_or_path, hub_kwargs) -> class
REMOTE_TOKENIZERS = {
    # ChatGLM2 and ChatGLM3 share the name: a function reads the repo's files and returns the class
    "tokenization_chatglm.ChatGLMTokenizer":
        "mindformers_hf.models.chatglm.tokenization_chatglm2:chatglm_tokenizer_class",
    "tokenization_chatglm.ChatGLM4Tokenizer": "mindformers_hf.models.chatglm.tokenization_chatglm4:ChatGLM4Tokenizer",
    # Qwen and Qwen-VL share the name: the repo's config.json tells them apart
    "tokenization_qwen.QWenTokenizer": "mindformers_hf.models.qwen.tokenization_qwen:qwen_tokenizer_class",
    "tokenization_baichuan.BaichuanTokenizer": "mindformers_hf.models.baichuan.tokenization_baichuan:BaichuanTokenizer",
    "tokenization_internlm.InternLMTokenizer": "mindformers_hf.models.internlm.tokenization_internlm:InternLMTokenizer",
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
            module, attr = target.split(":")
            found = getattr(importlib.import_module(module), attr)
            return found if isinstance(found, type) else found(name_or_path, hub)
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

    def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None,
                spaces_between_special_tokens=True, **kwargs):
        """transformers 4.x's slow-tokenizer decode, which the repo's class ran on: tokens of added tokens that
        are not special ("legacy added tokens") are kept apart from the SentencePiece runs and joined with
        spaces; the rest goes through convert_tokens_to_string."""
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        tokens = [tokens] if isinstance(tokens, str) else tokens
        specials = set(self.all_special_tokens)
        legacy = {t for t in self._added_tokens_encoder if t not in specials} | {
            t for t in self.extra_special_tokens if self.convert_tokens_to_ids(t) >= self.vocab_size}
        texts, run = [], []
        for token in tokens:
            if token in legacy:
                if run:
                    texts.append(self.convert_tokens_to_string(run))
                texts.append(token)
                run = []
            else:
                run.append(token)
        if run:
            texts.append(self.convert_tokens_to_string(run))
        text = (" " if spaces_between_special_tokens else "").join(texts)
        cleanup = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None \
            else clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if cleanup else text

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


def tiktoken_backend(ranks, pattern, special_tokens, nfc=False):
    """A `tokenizers.Tokenizer` giving tiktoken's ids: byte-level BPE, the format's split regex, `ignore_merges`
    (tiktoken takes a piece that is itself a token whole) and the special tokens after the ranks, in order.
    tiktoken merges any two adjacent parts whose concatenation is a token, lowest rank first: so every split of
    a token into two tokens is a merge, ordered by the token's rank (transformers' TikTokenConverter does the
    same)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_char = bytes_to_unicode()
    as_text = lambda token: "".join(byte_char[b] for b in token)  # noqa: E731
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges.extend((as_text(left), as_text(right)) for left, right in splits)
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


class SentencePieceTokenizer(RemoteFormatTokenizer):
    """The LLaMA-style slow tokenizers these repos derive from (InternLM2, Baichuan): SentencePiece pieces as
    tokens, text split at added tokens first, optional <s> / </s> around a sequence, and transformers 4.x's
    SentencePiece decoding with the variations each repo made (the class attributes below)."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]
    space_before_first_special = False  # a special token at the very start is preceded by a space too
    clean_up_in_decode = False  # convert_tokens_to_string applies clean_up_tokenization itself
    pair_has_own_specials = True  # a pair is <s> A </s> <s> B </s> (LLaMA), else <s> A B </s>

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
                 sp_model_kwargs=None, add_bos_token=True, add_eos_token=False, **kwargs):
        if sp_model_kwargs:
            raise NotImplementedError(f"{type(self).__name__}: sp_model_kwargs (sampling, alpha) is not supported")
        self.vocab_file = vocab_file
        self.sp_model = load_sentencepiece(vocab_file)
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
                         **kwargs)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self._added_tokens_encoder)
        return vocab

    def _tokenize(self, text, **kwargs):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens):
        specials = set(self.all_special_tokens)
        text, run, previous_special = "", [], False
        for i, token in enumerate(tokens):
            if token in specials:
                space = not previous_special and (i != 0 or self.space_before_first_special)
                text += (" " if space else "") + self.sp_model.decode(run) + token
                run, previous_special = [], True
            else:
                run.append(token)
                previous_special = False
        text += self.sp_model.decode(run)
        return self.clean_up_tokenization(text) if self.clean_up_in_decode else text

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        if token_ids_1 is None:
            return bos + list(token_ids_0) + eos
        if self.pair_has_own_specials:
            return bos + list(token_ids_0) + eos + bos + list(token_ids_1) + eos
        return bos + list(token_ids_0) + list(token_ids_1) + eos

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        bos, eos = [1] * self.add_bos_token, [1] * self.add_eos_token
        if token_ids_1 is None:
            return bos + [0] * len(token_ids_0) + eos
        if self.pair_has_own_specials:
            return bos + [0] * len(token_ids_0) + eos + bos + [0] * len(token_ids_1) + eos
        return bos + [0] * (len(token_ids_0) + len(token_ids_1)) + eos

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        """transformers leaves add_bos_token / add_eos_token out of tokenizer_config.json (its fast tokenizers keep
        them in the post-processor); the repo's class reads them from there, so they are written back."""
        config_file = next((f for f in file_names if f.endswith("tokenizer_config.json")), None)
        if config_file is not None:
            with open(config_file, encoding="utf-8") as f:
                config = json.load(f)
            config.update(add_bos_token=self.add_bos_token, add_eos_token=self.add_eos_token)
            with open(config_file + ".tmp", "w", encoding="utf-8") as f:
                f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            os.replace(config_file + ".tmp", config_file)
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)

    def num_special_tokens_to_add(self, pair=False):
        return (int(self.add_bos_token) + int(self.add_eos_token)) * (2 if pair and self.pair_has_own_specials else 1)
