"""Qwen (v1)'s tokenizer (`tokenization_qwen.QWenTokenizer`), read natively from the repo's `qwen.tiktoken`; the
repo's code never runs. The published tokenization_qwen.py runs tiktoken; we build the same BPE as a fast
`tokenizers` backend (tokenization_remote.tiktoken_backend). Facts from the published code:

- text is NFC-normalised, then split by Qwen's regex (PATTERN) and byte-pair merged by rank;
- 208 special tokens follow the ranks: <|endoftext|> <|im_start|> <|im_end|> <|extra_0|> ... <|extra_204|>;
  in text they are recognised by default (tiktoken's allowed_special="all"); `allowed_special=set()` encodes
  them as text (as make_context does for message contents);
- no BOS/EOS is added; there is no eos/pad token unless the config sets one (`eod_id` is <|endoftext|>);
- decoding joins the tokens' bytes (invalid UTF-8 replaced); `skip_special_tokens` drops every special id.
"""
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from ...tokenization_remote import copy_vocabulary_file, read_tiktoken_ranks, tiktoken_backend

PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
           r"""\s+(?!\S)|\s+""")
ENDOFTEXT, IMSTART, IMEND = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IMSTART, IMEND) + tuple(f"<|extra_{i}|>" for i in range(205))
DEFAULT_SYSTEM = "You are a helpful assistant."

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
        self.special_tokens = {token: start + i for i, token in enumerate(SPECIAL_TOKENS)}
        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id, self.im_end_id = self.special_tokens[IMSTART], self.special_tokens[IMEND]
        kwargs.setdefault("chat_template", CHAT_TEMPLATE)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(tokenizer_object=tiktoken_backend(self.mergeable_ranks, PATTERN, SPECIAL_TOKENS, nfc=True),
                         **kwargs)
        if isinstance(auto_map, (list, tuple)):
            auto_map = {"AutoTokenizer": list(auto_map)}
        self._auto_map = auto_map

    @staticmethod
    def _special_rule(kwargs):
        """tiktoken's allowed_special / disallowed_special, as the published tokenize() takes them."""
        allowed = kwargs.pop("allowed_special", "all")
        disallowed = kwargs.pop("disallowed_special", ())
        if disallowed not in ((), None, set(), []):
            raise NotImplementedError("QWenTokenizer: disallowed_special is not supported")
        if allowed == "all":
            return kwargs
        if allowed in (set(), (), [], frozenset()):
            return {**kwargs, "split_special_tokens": True}
        raise NotImplementedError("QWenTokenizer: allowed_special must be 'all' or an empty set")

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **self._special_rule(kwargs))

    def encode(self, *args, **kwargs):
        return super().encode(*args, **self._special_rule(kwargs))

    def tokenize(self, text, *args, **kwargs):
        return super().tokenize(text, *args, **self._special_rule(kwargs))

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
