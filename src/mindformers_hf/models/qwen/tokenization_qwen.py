"""Qwen (v1)'s tokenizer (`tokenization_qwen.QWenTokenizer`), read natively from the repo's `qwen.tiktoken`; the
repo's code never runs. The published tokenization_qwen.py runs tiktoken; we build the same BPE as a fast
`tokenizers` backend (tokenization_remote.tiktoken_backend). Facts from the published code:

- text is NFC-normalised, then split by Qwen's regex (PATTERN) and byte-pair merged by rank;
- 208 special tokens follow the ranks: <|endoftext|> <|im_start|> <|im_end|> <|extra_0|> ... <|extra_204|>;
  in text they are recognised by default (tiktoken's allowed_special="all"); `allowed_special=set()` encodes
  them as text (as make_context does for message contents);
- no BOS/EOS is added; there is no eos/pad token unless the config sets one (`eod_id` is <|endoftext|>);
- decoding joins the tokens' bytes (invalid UTF-8 replaced); `skip_special_tokens` drops every special id.

Qwen-VL's tokenizer (Qwen/Qwen-VL, Qwen/Qwen-VL-Chat: the same class name) is read when the tokenizer config names
its image tags (`image_start_tag` ...) or the folder's config.json has a `visual` section. Its published
tokenization_qwen.py adds 9 special tokens after the 208 (<ref> </ref> <box> </box> <quad> </quad> <img> </img>
<imgpad>) and rewrites each `<img>...</img>` of the text: the UTF-8 bytes of what is inside become ids equal to the
byte values, padded with <imgpad> to 256 (more is an error; an <img> without </img> too); decoding turns such a
span back into `<img>` + the text of those bytes + `</img>`. `from_list_format` builds the "Picture N: <img>...</img>"
prompt text.
"""
import json
import os
import re
import unicodedata

from transformers.tokenization_utils_tokenizers import TokenizersBackend

from ...tokenization_remote import copy_vocabulary_file, read_tiktoken_ranks, tiktoken_backend

PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
           r"""\s+(?!\S)|\s+""")
ENDOFTEXT, IMSTART, IMEND = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IMSTART, IMEND) + tuple(f"<|extra_{i}|>" for i in range(205))
DEFAULT_SYSTEM = "You are a helpful assistant."
# Qwen-VL: the tokenizer's keyword -> its default tag, in the order their ids follow the 208 special tokens
IMAGE_TAGS = {"ref_start_tag": "<ref>", "ref_end_tag": "</ref>", "box_start_tag": "<box>", "box_end_tag": "</box>",
              "quad_start_tag": "<quad>", "quad_end_tag": "</quad>", "image_start_tag": "<img>",
              "image_end_tag": "</img>", "image_pad_tag": "<imgpad>"}
IMG_TOKEN_SPAN = 256


def _has_visual(config_path):
    try:
        with open(config_path, encoding="utf-8") as f:
            return bool(json.load(f).get("visual"))
    except (OSError, ValueError, AttributeError):
        return False


def _is_qwen_vl(tokenizer, vocab_file, kwargs):
    """A Qwen-VL tokenizer: AutoTokenizer found the repo's config.json with a `visual` section
    (`qwen_tokenizer_class`), its tokenizer config names an image tag, or the vocabulary's folder holds such a
    config.json."""
    if getattr(tokenizer, "qwen_vl", False) or any(name in kwargs for name in IMAGE_TAGS):
        return True
    return _has_visual(os.path.join(os.path.dirname(os.path.abspath(vocab_file)), "config.json"))

# make_context's text (chatml): the system turn (the chat() default when none is given), each turn as
# "\n<|im_start|>role\ncontent<|im_end|>", and "\n<|im_start|>assistant\n" to prompt a reply.
CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '" + DEFAULT_SYSTEM + "' %}{% set turns = messages %}{% endif %}"
    "{{ '<|im_start|>system\\n' + system + '<|im_end|>' }}"
    "{% for message in turns %}"
    "{{ '\\n<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n<|im_start|>assistant\\n' }}{% endif %}"
)


class QWenTokenizer(TokenizersBackend):
    vocab_files_names = {"vocab_file": "qwen.tiktoken"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, errors="replace", auto_map=None, **kwargs):
        if errors != "replace":
            raise NotImplementedError(f"QWenTokenizer: errors={errors!r} (only 'replace' decoding is supported)")
        if kwargs.get("extra_vocab_file"):
            raise NotImplementedError("QWenTokenizer: extra_vocab_file is not supported")
        for key in ("tokenizer_object", "tokenizer_file", "vocab", "merges", "extra_vocab_file"):
            kwargs.pop(key, None)
        self.vocab_file = vocab_file
        self.mergeable_ranks = read_tiktoken_ranks(vocab_file)
        start = len(self.mergeable_ranks)
        self.image_tags = None
        specials = SPECIAL_TOKENS
        if _is_qwen_vl(self, vocab_file, kwargs):  # Qwen-VL
            self.image_tags = {name: kwargs.pop(name, tag) for name, tag in IMAGE_TAGS.items()}
            specials = SPECIAL_TOKENS + tuple(self.image_tags.values())
        self.special_tokens = {token: start + i for i, token in enumerate(specials)}
        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id, self.im_end_id = self.special_tokens[IMSTART], self.special_tokens[IMEND]
        if self.image_tags:
            for name, tag in self.image_tags.items():
                setattr(self, name, tag)
                setattr(self, name.replace("_tag", "_id").replace("image_", "img_"), self.special_tokens[tag])
            self.image_special_tokens = {self.special_tokens[self.image_tags[name]] for name in list(IMAGE_TAGS)[:6]}
        kwargs.setdefault("chat_template", CHAT_TEMPLATE)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(tokenizer_object=tiktoken_backend(self.mergeable_ranks, PATTERN, specials, nfc=True),
                         **kwargs)
        if self.image_tags:
            self.init_kwargs.update(self.image_tags)  # save_pretrained writes them: the folder reloads as Qwen-VL
        if isinstance(auto_map, (list, tuple)):
            auto_map = {"AutoTokenizer": list(auto_map)}
        self._auto_map = auto_map

    def _special_rule(self, kwargs):
        """tiktoken's allowed_special / disallowed_special, as the published tokenize() takes them. Qwen-VL also
        takes a set of its image tags (its make_context encodes messages with allowed_special=set(IMAGE_ST))."""
        allowed = kwargs.pop("allowed_special", "all")
        disallowed = kwargs.pop("disallowed_special", ())
        if disallowed not in ((), None, set(), []):
            raise NotImplementedError("QWenTokenizer: disallowed_special is not supported")
        if allowed == "all":
            return kwargs
        if allowed in (set(), (), [], frozenset()):
            return {**kwargs, "split_special_tokens": True}
        if self.image_tags and set(allowed) <= set(self.image_tags.values()):
            return {**kwargs, "split_special_tokens": True, "qwen_vl_allowed": frozenset(allowed)}
        raise NotImplementedError("QWenTokenizer: allowed_special must be 'all', an empty set"
                                  + (" or a set of the image tags" if self.image_tags else ""))

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **self._special_rule(kwargs))

    def encode(self, *args, **kwargs):
        return super().encode(*args, **self._special_rule(kwargs))

    def tokenize(self, text, *args, **kwargs):
        kwargs = self._special_rule(kwargs)
        if self._vl_path(text, kwargs):
            return self.convert_ids_to_tokens(self._ids_with_images(text, kwargs.get("qwen_vl_allowed")))
        return super().tokenize(text, *args, **kwargs)

    # ------------------------------------------------------------------------------------------- Qwen-VL
    @property
    def IMAGE_ST(self):  # noqa: N802 (the published attribute: the 9 tags, the published make_context reads it)
        return tuple(self.image_tags.values()) if self.image_tags else ()

    def _vl_path(self, text, kwargs):
        """Whether to encode through the published image-span rewrite: Qwen-VL text whose tags are recognised."""
        if not self.image_tags or (kwargs.get("split_special_tokens") and "qwen_vl_allowed" not in kwargs):
            return False
        texts = [text] if isinstance(text, str) else text if isinstance(text, (list, tuple)) else []
        tags = kwargs.get("qwen_vl_allowed") or (self.image_start_tag,)  # all allowed: only <img> changes ids
        return any(isinstance(t, str) and any(tag in t for tag in tags) for t in texts)

    def _encode_piece(self, text, specials_as_text):
        backend = self._tokenizer
        saved = backend.encode_special_tokens
        backend.encode_special_tokens = specials_as_text
        try:
            return backend.encode(text, add_special_tokens=False).ids
        finally:
            backend.encode_special_tokens = saved

    def _token_bytes(self, token_id):
        if not hasattr(self, "_bytes_of_rank"):
            self._bytes_of_rank = {rank: token for token, rank in self.mergeable_ranks.items()}
        if token_id not in self._bytes_of_rank:
            raise ValueError(f"QWenTokenizer (Qwen-VL): a special token inside {self.image_start_tag}..."
                             f"{self.image_end_tag}")
        return self._bytes_of_rank[token_id]

    def _ids_with_images(self, text, allowed=None):
        """The published tokenize: the NFC text's ids (special tokens recognised: all, or only `allowed`), then each
        <img> ... (the first </img> after it) rewritten: the inner tokens' bytes as ids, <imgpad> up to 256."""
        text = unicodedata.normalize("NFC", text)
        if allowed is None:
            ids = self._encode_piece(text, False)
        else:
            ids = []
            pattern = "(" + "|".join(re.escape(t) for t in sorted(allowed, key=len, reverse=True)) + ")"
            for n, piece in enumerate(re.split(pattern, text)):
                ids.extend([self.special_tokens[piece]] if n % 2 else self._encode_piece(piece, True))
        out, n = [], 0
        while self.img_start_id in ids[n:]:
            a = ids.index(self.img_start_id, n)
            if self.img_end_id not in ids[a:]:
                raise ValueError("Unclosed image token")
            b = ids.index(self.img_end_id, a)
            url = list(b"".join(self._token_bytes(i) for i in ids[a + 1:b]))
            if len(url) > IMG_TOKEN_SPAN:
                raise ValueError(f"The content in {self.image_start_tag}..{self.image_end_tag} is too long")
            out += ids[n:a] + [self.img_start_id] + url + [self.img_pad_id] * (IMG_TOKEN_SPAN - len(url)) \
                + [self.img_end_id]
            n = b + 1
        return out + ids[n:]

    def _encode_plus(self, text, text_pair=None, **kwargs):
        allowed = kwargs.pop("qwen_vl_allowed", None)
        if not self._vl_path(text, {**kwargs, "qwen_vl_allowed": allowed} if allowed is not None else kwargs):
            return super()._encode_plus(text, text_pair, **kwargs)
        from transformers.tokenization_utils_base import BatchEncoding, PaddingStrategy, TruncationStrategy

        unsupported = [name for name, on in (
            ("text_pair", text_pair is not None), ("is_split_into_words", kwargs.get("is_split_into_words")),
            ("truncation", kwargs.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE)
             != TruncationStrategy.DO_NOT_TRUNCATE),
            ("return_offsets_mapping", kwargs.get("return_offsets_mapping")),
            ("return_overflowing_tokens", kwargs.get("return_overflowing_tokens"))) if on]
        if unsupported:
            raise NotImplementedError(f"QWenTokenizer (Qwen-VL): text with {self.image_start_tag} spans and "
                                      f"{', '.join(unsupported)}")
        batched = not isinstance(text, str)
        ids = [self._ids_with_images(t, allowed) for t in (text if batched else [text])]
        data = {"input_ids": ids}
        if kwargs.get("return_attention_mask") is not False:
            data["attention_mask"] = [[1] * len(row) for row in ids]
        if kwargs.get("return_special_tokens_mask"):
            special = set(self.special_tokens.values())
            data["special_tokens_mask"] = [[int(i in special) for i in row] for row in ids]
        if kwargs.get("return_length"):
            data["length"] = [len(row) for row in ids]
        padding = kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD)
        if padding != PaddingStrategy.DO_NOT_PAD:
            out = self.pad(data, padding=padding.value, max_length=kwargs.get("max_length"),
                           pad_to_multiple_of=kwargs.get("pad_to_multiple_of"), padding_side=kwargs.get("padding_side"),
                           return_attention_mask=kwargs.get("return_attention_mask"))
            data = dict(out)
        if not batched:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, tensor_type=kwargs.get("return_tensors"))

    def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        """Qwen-VL: an image span reads back as <img> + its path's text + </img> (the published _decode);
        keep_image_special=True with skip_special_tokens keeps <ref> ... </quad>."""
        keep_image_special = kwargs.pop("keep_image_special", False)
        if self.image_tags:
            ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
            out, n = [], 0
            while n < len(ids):
                if ids[n] == self.img_start_id and self.img_end_id in ids[n + 1:]:
                    end = ids.index(self.img_end_id, n + 1)
                    inner = ids[n + 1:end]
                    inner = inner[:inner.index(self.img_pad_id)] if self.img_pad_id in inner else inner
                    url = bytes(inner).decode("utf-8", errors="replace") if all(0 <= i < 256 for i in inner) else None
                    if url is not None:
                        out += [self.img_start_id] + self._tokenizer.encode(url, add_special_tokens=False).ids \
                            + [self.img_end_id]
                        n = end + 1
                        continue
                out.append(ids[n])
                n += 1
            token_ids = out
            if skip_special_tokens and keep_image_special:
                token_ids = [i for i in token_ids if i < self.eod_id or i in self.image_special_tokens]
                skip_special_tokens = False
        return super()._decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)

    def from_list_format(self, list_format):
        """The published prompt text of a list of {"image": path}, {"text": ...}, {"box": [...], "ref": ...}."""
        if not self.image_tags:
            raise NotImplementedError("from_list_format is Qwen-VL's (this tokenizer has no image tags)")
        text, images = "", 0
        for element in list_format:
            if "image" in element:
                images += 1
                text += f"Picture {images}: {self.image_start_tag}{element['image']}{self.image_end_tag}\n"
            elif "text" in element:
                text += element["text"]
            elif "box" in element:
                if "ref" in element:
                    text += self.ref_start_tag + element["ref"] + self.ref_end_tag
                for box in element["box"]:
                    text += f"{self.box_start_tag}({box[0]},{box[1]}),({box[2]},{box[3]}){self.box_end_tag}"
            else:
                raise ValueError("Unsupported element: " + str(element))
        return text

    def _add_tokens(self, new_tokens, special_tokens=False):
        unknown = [str(t) for t in new_tokens or [] if str(t) and str(t) not in self.special_tokens]
        if unknown:
            raise ValueError(f"QWenTokenizer cannot add tokens to its fixed vocabulary: {unknown[:5]} (only its own "
                             "special tokens can be named, e.g. pad_token='<|endoftext|>')")
        return super()._add_tokens(new_tokens, special_tokens=special_tokens)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        return copy_vocabulary_file(self, save_directory, filename_prefix)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        """The repo's files: qwen.tiktoken beside tokenizer_config.json (no tokenizer.json, as published)."""
        return tuple(file_names) + self.save_vocabulary(str(save_directory), filename_prefix)


class QWenVLTokenizer(QWenTokenizer):
    """QWenTokenizer as a Qwen-VL repo's (the published class has the same name, which save_pretrained keeps)."""
    qwen_vl = True


QWenVLTokenizer.__name__ = QWenVLTokenizer.__qualname__ = "QWenTokenizer"


def qwen_tokenizer_class(name_or_path, hub_kwargs):
    """The class for a repo naming `tokenization_qwen.QWenTokenizer`: Qwen-VL's variant when the repo's config.json
    has a `visual` section (Qwen/Qwen-VL, Qwen/Qwen-VL-Chat), else Qwen's."""
    from transformers.utils import cached_file

    try:
        path = cached_file(name_or_path, "config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    except (OSError, ValueError):
        path = None
    return QWenVLTokenizer if path and _has_visual(path) else QWenTokenizer
