"""InternLM (v1)'s tokenizer (`tokenization_internlm.InternLMTokenizer`), read natively from the repo's
SentencePiece `tokenizer.model`; the repo's code never runs. InternLM2's tokenization file is this one renamed,
so the rules are InternLM2's (models/internlm2/tokenization_internlm2.py), without InternLM2's ChatML chat
template: InternLM's chat format (<|User|> / <|Bot|> with <eoh> / <eoa>) is not provided."""
from ..internlm2.tokenization_internlm2 import InternLM2Tokenizer


class InternLMTokenizer(InternLM2Tokenizer):
    def __init__(self, vocab_file, **kwargs):
        kwargs.setdefault("chat_template", None)
        super().__init__(vocab_file, **kwargs)
