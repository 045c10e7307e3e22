"""InternLM (v1)'s `model.chat()` / `model.stream_chat()` and `build_inputs` (internlm-chat-7b's modeling_internlm.py
API, its last revision) on our `generate`: InternLM2's machinery (models/internlm2/chat_internlm2.py) with v1's
prompt and end-of-turn token.

As published: the prompt text is "<|System|>:{meta_instruction}\\n" (when given), then per (query, response) pair
"<|User|>:{query}\\n<|Bot|>:{response}<eoa>\\n", then "<|User|>:{query}\\n<|Bot|>:", tokenized with the tokenizer's
<s> (written as text when `add_bos_token` is off); generation stops at </s> or <eoa>; the reply is decoded with
special tokens skipped and cut at "<eoa>"; `history` comes back extended by (query, response). The default
meta instruction is InternLM2's text. (The first internlm-chat-7b revisions wrote "<eoh>" after each query
and had no meta instruction; their checkpoints read this layout too.)"""
from ..internlm2.chat_internlm2 import META_INSTRUCTION, InternLM2ChatMixin

__all__ = ["META_INSTRUCTION", "InternLMChatMixin", "build_prompt"]


def build_prompt(tokenizer, query, history=None, meta_instruction=""):
    """The prompt text of the published build_inputs (before tokenization)."""
    prompt = "" if tokenizer.add_bos_token else tokenizer.bos_token
    if meta_instruction:
        prompt += f"<|System|>:{meta_instruction}\n"
    for old_query, response in history or []:
        prompt += f"<|User|>:{old_query}\n<|Bot|>:{response}<eoa>\n"
    return prompt + f"<|User|>:{query}\n<|Bot|>:"


class InternLMChatMixin(InternLM2ChatMixin):
    _build_prompt = staticmethod(build_prompt)
    _end_of_turn = "<eoa>"
