"""InternLM (v1)'s tokenizer (`tokenization_internlm.InternLMTokenizer`), read natively from the repo's
SentencePiece `tokenizer.model`; the repo's code never runs. The published class (internlm-chat-7b, and
InternLM/InternLM's tools/transformers/tokenization_internlm.py) has the same methods, defaults and rules as
InternLM2's (InternLM2's file is this one with docstrings added), so the rules are InternLM2Tokenizer's
(models/internlm2/tokenization_internlm2.py). What differs is in the repos' files: v1's <eoh> / <eoa> come from
added_tokens.json (text is split at them; decoding keeps them apart, as transformers 4.x's legacy added tokens),
and v1 ships no chat template: CHAT_TEMPLATE writes internlm-chat-7b's build_inputs layout
("<|System|>:" ... "\\n", "<|User|>:" ... "\\n", "<|Bot|>:" ... "<eoa>\\n"; chat_internlm.py), after the bos the
tokenizer adds there."""
from ..internlm2.tokenization_internlm2 import InternLM2Tokenizer

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|System|>:' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|User|>:' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|Bot|>:' + message['content'] + '<eoa>\\n' }}"
    "{% else %}{{ raise_exception('InternLM roles are system, user and assistant, not ' + message['role']) }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|Bot|>:' }}{% endif %}"
)


class InternLMTokenizer(InternLM2Tokenizer):
    def __init__(self, vocab_file, **kwargs):
        kwargs.setdefault("chat_template", CHAT_TEMPLATE)
        super().__init__(vocab_file, **kwargs)
