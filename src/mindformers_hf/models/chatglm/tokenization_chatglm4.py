"""GLM-4-9B-chat's tokenizer (`tokenization_chatglm.ChatGLM4Tokenizer`, the non-hf repos), read natively from the
repo's `tokenizer.model` (a tiktoken rank file); the repo's code never runs. The published class runs tiktoken;
we run the same BPE with the `tokenizers` library (tokenization_remote.tiktoken_backend). Facts from it:

- GLM-4's split regex (digits in runs of up to three), no normalisation;
- 14 special tokens follow the ranks: <|endoftext|> [MASK] [gMASK] [sMASK] <sop> <eop> <|system|> <|user|>
  <|assistant|> <|observation|> <|begin_of_image|> <|end_of_image|> <|begin_of_video|> <|end_of_video|>;
  tokenizer_config.json lists them as added tokens, so text is split at them first; in the text between,
  special strings are plain text unless `encode_special_tokens=True`;
- `encode` prefixes [gMASK] <sop>; eos is <|endoftext|>; padding on the left with `position_ids`;
- decoding joins the tokens' bytes (invalid UTF-8 replaced) and writes special tokens as their strings.
The chat template is the repo's own (tokenizer_config.json).
"""
import re

from ...tokenization_remote import RemoteFormatTokenizer, read_tiktoken_ranks, tiktoken_backend
from .tokenization_chatglm import GLMPaddingMixin

PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = ("<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
                  "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
                  "<|begin_of_video|>", "<|end_of_video|>")
_SPECIALS = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


class ChatGLM4Tokenizer(GLMPaddingMixin, RemoteFormatTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask", "position_ids"]
    chat_format = "glm4"  # which model.chat() the tokenizer's prompts belong to (chat_chatglm.py)

    def __init__(self, vocab_file, padding_side="left", clean_up_tokenization_spaces=False,
                 encode_special_tokens=False, **kwargs):
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self.vocab_file = vocab_file
        self.encode_special_tokens = encode_special_tokens
        ranks = read_tiktoken_ranks(vocab_file)
        self._bpe = tiktoken_backend(ranks, PATTERN, ())
        self._pieces = self._bpe.get_vocab()  # byte-level piece -> rank
        self._piece_of = {rank: piece for piece, rank in self._pieces.items()}
        self.special_ids = {token: len(ranks) + i for i, token in enumerate(SPECIAL_TOKENS)}
        self._special_of = {i: token for token, i in self.special_ids.items()}
        self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        kwargs.setdefault("eos_token", "<|endoftext|>")
        super().__init__(padding_side=padding_side, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                         **kwargs)

    @property
    def vocab_size(self):
        return len(self._pieces) + len(SPECIAL_TOKENS)

    def __len__(self):
        return self.vocab_size

    def get_vocab(self):
        return {**self._pieces, **self.special_ids}

    def get_command(self, token):
        if token not in self.special_ids:
            raise ValueError(f"{token} is not a special token of GLM-4's tokenizer")
        return self.special_ids[token]

    def _tokenize(self, text, **kwargs):
        parts = _SPECIALS.split(text) if self.encode_special_tokens else [text]
        tokens = []
        for part in parts:
            if part in self.special_ids:
                tokens.append(part)
            elif part:
                tokens.extend(self._bpe.encode(part, add_special_tokens=False).tokens)
        return tokens

    def _convert_token_to_id(self, token):
        return self.special_ids.get(token, self._pieces.get(token))

    def _convert_id_to_token(self, index):
        return self._special_of.get(index) or self._piece_of[index]

    def convert_tokens_to_string(self, tokens):
        text, pending = "", bytearray()
        for token in tokens:
            if token in self.special_ids or token in self._added_tokens_encoder:
                text += pending.decode("utf-8", errors="replace") + token
                pending = bytearray()
            else:
                pending.extend(self._byte_of[char] for char in token)
        return text + pending.decode("utf-8", errors="replace")

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        ids = [self.special_ids["[gMASK]"], self.special_ids["<sop>"]] + list(token_ids_0)
        if token_ids_1 is not None:
            ids += list(token_ids_1) + [self.special_ids["<|endoftext|>"]]
        return ids

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            return [int(i in self._special_of) for i in token_ids_0]
        mask = [1, 1] + [0] * len(token_ids_0)
        return mask + [0] * len(token_ids_1) + [1] if token_ids_1 is not None else mask

    def num_special_tokens_to_add(self, pair=False):
        return 3 if pair else 2
