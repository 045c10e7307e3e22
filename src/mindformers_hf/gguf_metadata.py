"""A GGUF file's config and tokenizer, built from its metadata without transformers' GGUF code.

transformers reads GGUF metadata through a module that imports torch (5.25 and later), and its reader
takes seconds for a 49k-token vocabulary. Here the same llama.cpp keys are read with our header
parser (`gguf_io._GGUFHeader`, milliseconds) and turned into transformers' own config class and a
`PreTrainedTokenizerFast` whose `tokenizers` backend is built from the vocabulary, merges or scores.
The facts (key names, token types, split regexes, defaults) are llama.cpp's and HF's GGUF loader's;
tests compare the result with HF's GGUF loader on the same files.
"""
import contextlib

from .gguf_io import _GGUFHeader
from .safetensors_io import CheckpointError

_MOE_KEYS = {"expert_count": "num_experts", "expert_used_count": "num_experts_per_tok",
             "expert_feed_forward_length": "moe_intermediate_size"}
# llama.cpp architecture -> (HF model_type, extra config keys of that architecture)
_ARCHITECTURES = {
    "llama": ("llama", {"rope.dimension_count": "head_dim"}),
    "mistral": ("mistral", {"rope.dimension_count": "head_dim"}),
    "qwen2": ("qwen2", {}),
    # HF reads no key_length for qwen3 (its head_dim stays the config default, 128, as in every Qwen3 model); we
    # do, so a file of another head_dim loads here (and does not there)
    "qwen3": ("qwen3", {"attention.key_length": "head_dim"}),
    "phi3": ("phi3", {}),  # HF reads no rope.dimension_count here: head_dim is hidden / heads
    # key_length is Gemma's head_dim; HF reads no other Gemma key (query_pre_attn_scalar, layer_types, the
    # sliding layers' rope base and the soft-caps keep their config defaults there, so here too)
    "gemma2": ("gemma2", {"attention.key_length": "head_dim", "attention.sliding_window": "sliding_window"}),
    "gemma3": ("gemma3_text", {"attention.key_length": "head_dim", "attention.sliding_window": "sliding_window"}),
    # MoE: HF reads expert_count / expert_used_count only (the experts' and the shared expert's widths keep
    # their config defaults there, which fit one model each: Qwen1.5-MoE-A2.7B, Qwen3-30B-A3B); we read them too
    "qwen2moe": ("qwen2_moe", {**_MOE_KEYS, "expert_shared_feed_forward_length": "shared_expert_intermediate_size"}),
    "qwen3moe": ("qwen3_moe", {**_MOE_KEYS, "attention.key_length": "head_dim"}),
    # GPT-2 has its own config names (its own key table below); the vocabulary size is the vocabulary's length
    "gpt2": ("gpt2", {}),
    # LayerNorm eps; HF reads no rope base for it (we do: StarCoder2-7B/15B's is not the config default)
    "starcoder2": ("starcoder2", {"attention.layer_norm_epsilon": "norm_epsilon"}),
}
# config values an architecture's file implies but does not state (HF's GGUF_CONFIG_DEFAULTS_MAPPING): llama.cpp's
# qwen3moe graph renormalises the top-k routing weights
_CONFIG_DEFAULTS = {"qwen3moe": {"norm_topk_prob": True}}
# architectures whose SentencePiece vocabulary (tokenizer model "llama") is Gemma's: built as HF's GemmaTokenizer
_GEMMA_VOCAB = ("gemma", "gemma2", "gemma3")
# GemmaTokenizer's special tokens, which the file's ids override
_GEMMA_SPECIAL = {"unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                  "mask_token": "<mask>"}
_CONFIG_KEYS = {  # "<architecture>.<key>" -> HF config field, common to the architectures above
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}
# architectures whose config names differ from the common ones: their whole key table. GPT-2: HF reads
# context_length as `n_ctx` (not a GPT2Config field: `n_positions` keeps its default 1024, GPT-2's own) and
# feed_forward_length as an unused `feed_forward_length` (`n_inner` stays None: 4 * n_embd, what llama.cpp writes);
# ours reads context_length as `n_positions`, so a file of another context length loads here (not there)
_OWN_CONFIG_KEYS = {"gpt2": {"block_count": "n_layer", "context_length": "n_positions", "embedding_length": "n_embd",
                             "attention.head_count": "n_head", "attention.layer_norm_epsilon": "layer_norm_epsilon",
                             "vocab_size": "vocab_size"}}
_TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                     "tokenizer.ggml.merges")
_SPECIAL_TOKEN_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                      "pad_token": "padding_token_id"}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's token types

# `tokenizer.ggml.pre` -> the split regex the vocabulary's merges were learned with (llama.cpp's table);
# a type not listed keeps GPT-2's byte-level split.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_TOKENIZER_SPLITS = {
    "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "falcon3": _LLAMA3_SPLIT, "dbrx": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT, "megrez": _QWEN2_SPLIT,
}


def read_metadata(path, tokenizer=False):
    """The file's metadata scalars (and the tokenizer's arrays when asked) and its tensor names."""
    header = _GGUFHeader(path, arrays=_TOKENIZER_ARRAYS if tokenizer else ())
    return header.metadata, tuple(name for name, *_ in header.tensors)


def gguf_config_dict(path):
    """The transformers config dict HF's GGUF loader builds for this file."""
    metadata, tensor_names = read_metadata(path)
    architecture = metadata.get("general.architecture")
    if architecture not in _ARCHITECTURES:
        raise CheckpointError(f"{path}: GGUF architecture {architecture!r} is not supported "
                              f"(supported: {', '.join(sorted(_ARCHITECTURES))})")
    model_type, extra_keys = _ARCHITECTURES[architecture]
    config = {"model_type": model_type,
              # llama.cpp writes the output projection only when it is not the embedding matrix
              "tie_word_embeddings": "output.weight" not in tensor_names, **_CONFIG_DEFAULTS.get(architecture, {})}
    if "general.name" in metadata:
        config["_model_name_or_path"] = metadata["general.name"]
    for key, field in {**_OWN_CONFIG_KEYS.get(architecture, _CONFIG_KEYS), **extra_keys}.items():
        value = metadata.get(f"{architecture}.{key}")
        if value is not None:
            config[field] = value
    for name, key in _SPECIAL_TOKEN_IDS.items():  # the config carries the special tokens' ids too
        if f"tokenizer.ggml.{key}" in metadata:
            config[f"{name}_id"] = metadata[f"tokenizer.ggml.{key}"]
    if "vocab_size" not in config:  # older files state it only as the vocabulary's length
        config["vocab_size"] = len(read_metadata(path, tokenizer=True)[0].get("tokenizer.ggml.tokens") or ())
    return config


def gguf_config(path, **kwargs):
    from transformers import AutoConfig

    config = gguf_config_dict(path)
    with _unusable_metadata(path, "config"):
        return AutoConfig.for_model(**{**config, **kwargs})


def gguf_tokenizer(path, **kwargs):
    """A `PreTrainedTokenizerFast` for the tokenizer the file describes (byte-level BPE or SentencePiece BPE)."""
    metadata, _ = read_metadata(path, tokenizer=True)
    with _unusable_metadata(path, "tokenizer"):
        return _build_tokenizer(path, metadata, kwargs)


@contextlib.contextmanager
def _unusable_metadata(path, what):
    """A well-formed file whose values cannot make a config or a tokenizer (an id past the vocabulary, a
    number where a list of tokens belongs, ...) is a CheckpointError naming the file, not a raw error."""
    try:
        yield
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: the GGUF metadata does not make a valid {what} "
                              f"({type(e).__name__}: {e})") from e


def _build_tokenizer(path, metadata, kwargs):
    from transformers import PreTrainedTokenizerFast

    tokens = metadata.get("tokenizer.ggml.tokens")
    if not tokens:
        raise CheckpointError(f"{path}: the GGUF file has no tokenizer (no tokenizer.ggml.tokens)")
    kind = metadata.get("tokenizer.ggml.model")
    builders = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}
    if kind not in builders:
        raise CheckpointError(f"{path}: GGUF tokenizer model {kind!r} is not supported "
                              f"(supported: {', '.join(sorted(builders))})")
    gemma = kind == "llama" and metadata.get("general.architecture") in _GEMMA_VOCAB
    backend = _gemma_bpe(metadata) if gemma else builders[kind](metadata)
    _add_marked_tokens(backend, metadata, byte_level=kind == "gpt2")

    config = dict(_GEMMA_SPECIAL, padding_side="left") if gemma else {}  # GemmaTokenizer's defaults
    config.update({name: tokens[metadata[f"tokenizer.ggml.{key}"]]
                   for name, key in _SPECIAL_TOKEN_IDS.items() if f"tokenizer.ggml.{key}" in metadata})
    if "tokenizer.chat_template" in metadata:
        config["chat_template"] = metadata["tokenizer.chat_template"]
    for flag in ("add_bos_token", "add_eos_token"):
        if f"tokenizer.ggml.{flag}" in metadata:
            config[flag] = metadata[f"tokenizer.ggml.{flag}"]
    if kind == "llama":  # llama.cpp adds BOS to a SentencePiece vocabulary whose file does not say otherwise
        config.setdefault("add_bos_token", True)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **{**config, **kwargs})


def _merges(metadata, vocab, scores=None):
    """The file's merges, or (SentencePiece files carry none) the ones its scored vocabulary implies."""
    if metadata.get("tokenizer.ggml.merges"):
        return [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    # every split of a token into two tokens is a merge ranked by the whole token's score, as SentencePiece's
    # BPE applies them (HF's `generate_merges` order: score, then the pieces' lengths, ties by piece ids)
    merges = []
    for token, score in scores.items():
        pieces = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        pieces.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        merges.extend((left, right, score) for left, right in pieces)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _byte_level_bpe(metadata):
    """GPT-2-style byte-level BPE (SmolLM, Qwen2, LLaMA 3): tokens are spelled in GPT-2's byte alphabet."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    alphabet = _bytes_to_unicode()
    spelled = set(alphabet.values())
    vocab = {}
    for index, token in enumerate(metadata["tokenizer.ggml.tokens"]):
        vocab[token if set(token) <= spelled else "".join(alphabet[b] for b in token.encode("utf-8"))] = index
    backend = Tokenizer(models.BPE(vocab=vocab, merges=_merges(metadata, vocab), dropout=None,
                                   continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    split = _PRE_TOKENIZER_SPLITS.get(metadata.get("tokenizer.ggml.pre"))
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    return backend


def _sentencepiece_bpe(metadata):
    """SentencePiece BPE (LLaMA 2, Mistral, Yi): '▁' for spaces, byte fallback for unknown characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokens = metadata["tokenizer.ggml.tokens"]
    vocab = {token: index for index, token in enumerate(tokens)}
    scores = dict(zip(tokens, metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens)))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=_merges(metadata, vocab, scores), dropout=None,
                                   fuse_unk=True, byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    return backend


def _gemma_bpe(metadata):
    """Gemma's SentencePiece BPE as HF's GemmaTokenizer: spaces normalised to '▁' (no prefix space), byte
    fallback. Two fixes its GGUF files need (as HF's GGUF loader): runs of spaces are stored as real spaces and
    are looked up as '▁' runs, and the merges, absent from the file, rank by the tokens' order in the file (Gemma's
    scores do not follow its merge order)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in metadata["tokenizer.ggml.tokens"]]
    vocab = {token: index for index, token in enumerate(tokens)}
    order = {token: -index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=_merges(metadata, vocab, order), dropout=None,
                                   fuse_unk=True, unk_token=_GEMMA_SPECIAL["unk_token"], byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    return backend


def _add_marked_tokens(backend, metadata, byte_level):
    """Tokens the file marks CONTROL become special added tokens, USER_DEFINED ones plain added tokens, so
    that they are matched whole. A CONTROL token spelled outside the byte alphabet of a byte-level
    vocabulary is a llama.cpp mislabel and is left alone (adding it would grow the vocabulary)."""
    from tokenizers import AddedToken

    spelled = set(_bytes_to_unicode().values()) if byte_level else None
    types = metadata.get("tokenizer.ggml.token_type") or ()
    pairs = list(zip(metadata["tokenizer.ggml.tokens"], types))
    control = [AddedToken(t, normalized=False, special=True) for t, kind in pairs
               if kind == _CONTROL and (spelled is None or set(t) <= spelled)]
    if control:
        backend.add_special_tokens(control)
    vocab = backend.get_vocab()
    user = [AddedToken(t, normalized=False, special=False) for t, kind in pairs if kind == _USER_DEFINED and t in vocab]
    if user:
        backend.add_tokens(user)


def _bytes_to_unicode():
    """GPT-2's byte -> printable character table (the alphabet byte-level BPE vocabularies are spelled in)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
