"""ChatGLM3-6B's tokenizer (`tokenization_chatglm.ChatGLMTokenizer`), read natively from the repo's SentencePiece
`tokenizer.model`; the repo's code never runs. Facts from the published tokenization_chatglm.py:

- ids are SentencePiece's; nine special tokens follow the SentencePiece vocabulary, in this order:
  [MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|> <|observation|>;
- `encode` prefixes [gMASK] sop (a pair: [gMASK] sop A B </s>); eos is SentencePiece's </s>, pad and unk its <unk>;
- special-token strings in text are encoded as plain text unless `encode_special_tokens=True`;
- decoding writes special tokens as their strings and SentencePiece-decodes the runs between them;
- padding is on the left only and pads `position_ids` (0) besides `input_ids` (pad id) and `attention_mask`;
- `build_chat_input(query, history, role)`: [gMASK] sop, then per message <|role|> + sp(metadata + "\n") +
  sp(content) (a system message's `tools` appended as indented JSON), then <|assistant|>.

The chat template renders that layout as text (a space before each content stands for SentencePiece's dummy
prefix, as in the repo's own template); tokenizing it gives build_chat_input's ids.
"""
import json
import re

import numpy as np

from ...tokenization_remote import RemoteFormatTokenizer, load_sentencepiece

ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop") + ROLE_TOKENS
ROLES = ("system", "user", "assistant", "observation")

# Rendered chat text -> tokens: role tokens, the [gMASK]/[MASK]/[sMASK] markers, and `sop` only where the template
# writes it (right after [gMASK]), so that a word like "sophisticated" in a message stays text.
_CHAT_SPECIALS = re.compile(r"\[gMASK\]sop|"
                            + "|".join(re.escape(t) for t in SPECIAL_TOKENS if t not in ("sop", "eop")))
_ALL_SPECIALS = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'observation'] %}"
    "{{ raise_exception('ChatGLM3 roles are system, user, assistant and observation, not ' + message['role']) }}"
    "{% endif %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'system' and 'tools' in message %}"
    "{% set content = content + '\\n' + (message['tools'] | tojson(indent=4, ensure_ascii=False)) %}"
    "{% endif %}"
    "{% if loop.first %}{{ '[gMASK]sop' }}{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message.get('metadata', '') + '\\n' }}"
    "{% if content %}{{ ' ' + content }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


class GLMPaddingMixin:
    """ChatGLM3 / GLM-4 padding: on the left only, with `position_ids` (0 on padding) besides the attention mask."""

    def _pad(self, encoded_inputs, max_length=None, padding_strategy="do_not_pad", pad_to_multiple_of=None,
             padding_side=None, return_attention_mask=None):
        side = padding_side or self.padding_side
        if side != "left":
            raise ValueError(f"{type(self).__name__} pads on the left only (padding_side='left')")
        length = len(encoded_inputs[self.model_input_names[0]])
        if "position_ids" not in encoded_inputs:
            encoded_inputs["position_ids"] = list(range(length))
        padded = super()._pad(encoded_inputs, max_length, padding_strategy, pad_to_multiple_of, "left",
                              return_attention_mask)
        missing = len(padded[self.model_input_names[0]]) - len(padded["position_ids"])
        if missing > 0:
            padded["position_ids"] = [0] * missing + list(padded["position_ids"])
        return padded


class ChatGLMTokenizer(GLMPaddingMixin, RemoteFormatTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask", "position_ids"]
    chat_format = "chatglm3"  # which model.chat() the tokenizer's prompts belong to (chat_chatglm.py)
    special_token_names = SPECIAL_TOKENS
    default_chat_template = CHAT_TEMPLATE
    _chat_specials, _all_specials = _CHAT_SPECIALS, _ALL_SPECIALS

    def __init__(self, vocab_file, padding_side="left", clean_up_tokenization_spaces=False,
                 encode_special_tokens=False, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = load_sentencepiece(vocab_file)
        base = self.sp_model.vocab_size()
        self.special_ids = {token: base + i for i, token in enumerate(self.special_token_names)}
        self.special_tokens_by_id = {i: token for token, i in self.special_ids.items()}
        self.encode_special_tokens = encode_special_tokens
        self._chat_encoding = False
        # the repo's tokenizer fixes eos / unk / pad to SentencePiece's (its setters refuse other values)
        for key in ("eos_token", "unk_token", "pad_token", "bos_token"):
            kwargs.pop(key, None)
        unk = self.sp_model.id_to_piece(self.sp_model.unk_id())
        kwargs.setdefault("chat_template", self.default_chat_template)
        super().__init__(padding_side=padding_side, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                         eos_token=self.sp_model.id_to_piece(self.sp_model.eos_id()), unk_token=unk, pad_token=unk,
                         **kwargs)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self):
        return self.sp_model.vocab_size() + len(self.special_token_names)

    def __len__(self):
        return self.vocab_size

    def get_vocab(self):
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.sp_model.vocab_size())}
        vocab.update(self.special_ids)
        return vocab

    def get_command(self, token):
        """The id of a special token: <bos> <eos> <unk> <pad> or one of SPECIAL_TOKENS (the repo's API)."""
        named = {"<bos>": self.sp_model.bos_id(), "<eos>": self.sp_model.eos_id(), "<unk>": self.sp_model.unk_id(),
                 "<pad>": self.sp_model.unk_id()}
        if token in named:
            return named[token]
        if token not in self.special_ids:
            raise ValueError(f"{token} is not a special token of ChatGLM's tokenizer")
        return self.special_ids[token]

    def _convert_token_to_id(self, token):
        if token in self.special_ids:
            return self.special_ids[token]
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        if index in self.special_tokens_by_id:
            return self.special_tokens_by_id[index]
        return self.sp_model.id_to_piece(index)

    # ------------------------------------------------------------------ text <-> tokens
    def tokenize(self, text, **kwargs):
        pattern = self._chat_specials if self._chat_encoding else \
            self._all_specials if self.encode_special_tokens else None
        if pattern is None:
            return self.sp_model.encode_as_pieces(text)
        tokens, last = [], 0
        for match in pattern.finditer(text):
            if last < match.start():
                tokens.extend(self.sp_model.encode_as_pieces(text[last:match.start()]))
            found = match.group()
            tokens.extend(["[gMASK]", "sop"] if found == "[gMASK]sop" else [found])
            last = match.end()
        if last < len(text):
            tokens.extend(self.sp_model.encode_as_pieces(text[last:]))
        return tokens

    def convert_tokens_to_string(self, tokens):
        return self.sp_model.decode_pieces(tokens)

    def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        ids = [int(token_ids)] if np.ndim(token_ids) == 0 else [int(i) for i in token_ids]
        if skip_special_tokens:
            skip = set(self.all_special_ids) | set(self.special_tokens_by_id) | {self.sp_model.bos_id()}
            ids = [i for i in ids if i not in skip]
        text, run = "", []
        for i in ids:
            if i in self.special_tokens_by_id:
                text += self.sp_model.decode(run) + self.special_tokens_by_id[i]
                run = []
            else:
                run.append(i)
        return text + self.sp_model.decode(run)

    # ------------------------------------------------------------------ special tokens, padding
    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        ids = [self.special_ids["[gMASK]"], self.special_ids["sop"]] + list(token_ids_0)
        if token_ids_1 is not None:
            ids += list(token_ids_1) + [self.sp_model.eos_id()]
        return ids

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            special = set(self.all_special_ids) | set(self.special_tokens_by_id)
            return [int(i in special) for i in token_ids_0]
        mask = [1, 1] + [0] * len(token_ids_0)
        return mask + [0] * len(token_ids_1) + [1] if token_ids_1 is not None else mask

    def num_special_tokens_to_add(self, pair=False):
        return 3 if pair else 2

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, *args, **kwargs):
        self._chat_encoding = True
        try:
            return super().apply_chat_template(*args, **kwargs)
        finally:
            self._chat_encoding = False

    def build_single_message(self, role, metadata, message):
        if role not in ROLES:
            raise ValueError(f"ChatGLM3 roles are {', '.join(ROLES)}, not {role!r}")
        return [self.special_ids[f"<|{role}|>"]] + self.sp_model.encode(f"{metadata}\n") + \
            self.sp_model.encode(message)

    def build_chat_input(self, query, history=None, role="user", return_tensors="ms"):
        """The repo's prompt ids for `query` after `history` (a list of {"role", "content"[, "metadata", "tools"]}),
        with attention_mask and position_ids, as a BatchEncoding of one row (return_tensors: "ms", "np", "pt")."""
        ids = []
        for item in history or []:
            content = item["content"]
            if item["role"] == "system" and "tools" in item:
                content = content + "\n" + json.dumps(item["tools"], indent=4, ensure_ascii=False)
            ids.extend(self.build_single_message(item["role"], item.get("metadata", ""), content))
        ids.extend(self.build_single_message(role, "", query))
        ids.append(self.special_ids["<|assistant|>"])
        ids = self.build_inputs_with_special_tokens(ids)
        return self.pad({"input_ids": [ids]}, return_tensors=return_tensors)
