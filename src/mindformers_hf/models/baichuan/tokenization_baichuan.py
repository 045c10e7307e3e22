"""Baichuan / Baichuan2's tokenizer (`tokenization_baichuan.BaichuanTokenizer`), read natively from the repo's
SentencePiece `tokenizer.model`; the repo's code never runs. Facts from the published tokenization_baichuan.py
(transformers' LLaMA tokenizer of its time):

- ids are SentencePiece's (text split at added tokens first); `add_bos_token` (class default True; the Chat
  repos' tokenizer_config.json sets it false) and `add_eos_token` wrap a sequence, a pair is <s> A </s> <s> B </s>;
- there is no pad token unless the config names one (the Chat repos: <unk>); padding on the right;
- decoding: SentencePiece decodes the runs between special tokens, a special token's string is preceded by a
  space unless it is the first token or follows another special token.

The chat format (the repos' generation_utils.build_chat_input) puts the reserved tokens 195 (user) and 196
(assistant) before each turn's text, the system text first and bare; CHAT_TEMPLATE writes that as text with
the pieces of ids 195 / 196 (user-defined pieces of the model, so tokenizing the text gives the same ids).
"""
from ...tokenization_remote import SentencePieceTokenizer

USER_TOKEN_ID, ASSISTANT_TOKEN_ID = 195, 196  # Baichuan2's generation_config.json user_token_id / assistant_token_id


def chat_template(user, assistant):
    return (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% if not loop.first %}"
        "{{ raise_exception('Baichuan: the system message must come first') }}{% endif %}"
        "{{ message['content'] }}"
        "{% elif message['role'] == 'user' %}{{ '" + user + "' + message['content'] }}"
        "{% else %}{{ '" + assistant + "' + message['content'] }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + assistant + "' }}{% endif %}"
    )


class BaichuanTokenizer(SentencePieceTokenizer):
    def __init__(self, vocab_file, **kwargs):
        super().__init__(vocab_file, **kwargs)
        if self.chat_template is None and self.vocab_size > ASSISTANT_TOKEN_ID:
            self.chat_template = chat_template(self.sp_model.id_to_piece(USER_TOKEN_ID),
                                               self.sp_model.id_to_piece(ASSISTANT_TOKEN_ID))
