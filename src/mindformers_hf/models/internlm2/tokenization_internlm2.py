"""InternLM2's tokenizer (`tokenization_internlm2.InternLM2Tokenizer`, and the `..._fast.InternLM2TokenizerFast`
the repos also name), read natively from the repo's SentencePiece `tokenizer.model`; the repo's code never runs.
Facts from the published tokenization_internlm2.py (a LLaMA tokenizer variant):

- ids are SentencePiece's; the chat tokens (<|im_start|>, <|im_end|>, <|action_start|>, ...) are pieces of the
  model, listed as special added tokens in tokenizer_config.json: text is split at added tokens first, and each
  piece between them is SentencePiece-encoded on its own;
- <s> is prepended (`add_bos_token=True`), </s> appended only with `add_eos_token=True`; a pair is joined
  without a separator; pad is </s>;
- decoding: SentencePiece decodes the runs between special tokens, a special token is written as its string
  after a space unless the previous token was special too, and transformers' `clean_up_tokenization` is applied
  (always: the repo calls it itself);
- the repos ship their chat template (ChatML with a leading <s>); CHAT_TEMPLATE is the same text, used when a
  tokenizer_config.json has none.
"""
from ...tokenization_remote import RemoteFormatTokenizer, load_sentencepiece

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class InternLM2Tokenizer(RemoteFormatTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
                 sp_model_kwargs=None, add_bos_token=True, add_eos_token=False, decode_with_prefix_space=False,
                 clean_up_tokenization_spaces=False, **kwargs):
        if sp_model_kwargs:
            raise NotImplementedError("InternLM2Tokenizer: sp_model_kwargs (sampling / alpha) is not supported")
        self.vocab_file = vocab_file
        self.sp_model = load_sentencepiece(vocab_file)
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        self.decode_with_prefix_space = decode_with_prefix_space
        kwargs.setdefault("chat_template", CHAT_TEMPLATE)
        super().__init__(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    @property
    def bos_token_id(self):
        return self.sp_model.bos_id()

    @property
    def eos_token_id(self):
        return self.sp_model.eos_id()

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
        for token in tokens:
            if token in specials:
                text += ("" if previous_special else " ") + self.sp_model.decode(run) + token
                run, previous_special = [], True
            else:
                run.append(token)
                previous_special = False
        # the repo then adds a space and drops the first character: its prefix-space test compares a token
        # string with a set of ids, so it always adds the space, and the two cancel out
        return self.clean_up_tokenization(text + self.sp_model.decode(run))

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

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        ids = ([self.bos_token_id] if self.add_bos_token else []) + list(token_ids_0)
        if token_ids_1 is not None:
            ids += list(token_ids_1)
        return ids + ([self.eos_token_id] if self.add_eos_token else [])

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        mask = [1] * self.add_bos_token + [0] * len(token_ids_0) + [0] * len(token_ids_1 or [])
        return mask + [1] * self.add_eos_token

    def num_special_tokens_to_add(self, pair=False):
        return int(self.add_bos_token) + int(self.add_eos_token)
