"""InternLM2's tokenizer (`tokenization_internlm2.InternLM2Tokenizer`, and the `..._fast.InternLM2TokenizerFast`
the repos also name), read natively from the repo's SentencePiece `tokenizer.model`; the repo's code never runs.
Facts from the published tokenization_internlm2.py (a LLaMA tokenizer variant):

- ids are SentencePiece's; the chat tokens (<|im_start|>, <|im_end|>, <|action_start|>, ...) are pieces of the
  model, listed as special added tokens in tokenizer_config.json: text is split at added tokens first, and each
  piece between them is SentencePiece-encoded on its own;
- <s> is prepended (`add_bos_token=True`), </s> appended only with `add_eos_token=True`; a pair is joined
  without a separator; pad is </s>;
- decoding: SentencePiece decodes the runs between special tokens, a special token is written as its string
  after a space unless the previous token was special too (also at the start), and transformers'
  `clean_up_tokenization` is applied (always: the repo calls it itself; its prefix-space step adds a space and
  drops the first character again, as its test compares a token string with a set of ids);
- the repos ship their chat template (ChatML with a leading <s>); CHAT_TEMPLATE is the same text, used when a
  tokenizer_config.json has none.
"""
from ...tokenization_remote import SentencePieceTokenizer

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class InternLM2Tokenizer(SentencePieceTokenizer):
    space_before_first_special = True
    clean_up_in_decode = True
    pair_has_own_specials = False

    def __init__(self, vocab_file, pad_token="</s>", decode_with_prefix_space=False, **kwargs):
        self.decode_with_prefix_space = decode_with_prefix_space  # stored by the repo, never read
        kwargs.setdefault("chat_template", CHAT_TEMPLATE)
        super().__init__(vocab_file, pad_token=pad_token, **kwargs)
