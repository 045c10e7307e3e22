"""ChatGLM2-6B's tokenizer: the repos of ChatGLM2 and ChatGLM3 both name `tokenization_chatglm.ChatGLMTokenizer`,
but the published files differ, and so do the ids of the chat prompts. Facts from THUDM/chatglm2-6b's
tokenization_chatglm.py (where it differs from ChatGLM3's, tokenization_chatglm.py here):

- five special tokens follow the SentencePiece vocabulary: [MASK] [gMASK] [sMASK] sop eop (no role tokens);
- text is SentencePiece-encoded whole (no special-token split); `encode` prefixes [gMASK] sop, a pair ends with </s>;
- decoding: the repo's `convert_id_to_token` gives "" for the five tokens and for </s>, <s> and <unk> (its pad),
  and SentencePiece's `DecodePieces` leaves an empty piece out: those ids vanish from the text;
- the chat prompt is text, `build_prompt(query, history)`: "[Round n]\\n\\n问：{query}\\n\\n答：{response}\\n\\n" per
  (query, response) pair, then the query's round ending in "答："; no system turn.
Padding (left, with position_ids) and eos / pad / unk are ChatGLM3's.

`chatglm_tokenizer_class` tells the two apart from the repo's files (never running them).
"""
import json
import logging
import os
import re

import numpy as np

from .tokenization_chatglm import ROLE_TOKENS, SPECIAL_TOKENS, ChatGLMTokenizer

logger = logging.getLogger(__name__)

CHAT_TEMPLATE = (
    "{% set round = namespace(n=0) %}"
    "{{ '[gMASK]sop' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% set round.n = round.n + 1 %}"
    "{{ '[Round ' ~ round.n ~ ']\\n\\n问：' ~ message['content'] ~ '\\n\\n答：' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] ~ '\\n\\n' }}"
    "{% else %}"
    "{{ raise_exception('ChatGLM2 prompts have user and assistant turns only (no system prompt), not ' "
    "+ message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
)


class ChatGLM2Tokenizer(ChatGLMTokenizer):
    """Saved as the published `ChatGLMTokenizer` (tokenizer_config.json's tokenizer_class)."""

    chat_format = "chatglm2"
    special_token_names = SPECIAL_TOKENS[:5]
    default_chat_template = CHAT_TEMPLATE
    _chat_specials = re.compile(r"\[gMASK\]sop")  # the prefix the template writes; the rest is text
    _all_specials = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS[:5]))

    def build_prompt(self, query, history=None):
        """The repo's prompt text for `query` after `history`, a list of (query, response) pairs."""
        prompt = ""
        for i, (old_query, response) in enumerate(history or []):
            prompt += f"[Round {i + 1}]\n\n问：{old_query}\n\n答：{response}\n\n"
        return prompt + f"[Round {len(history or []) + 1}]\n\n问：{query}\n\n答："

    def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        ids = [int(token_ids)] if np.ndim(token_ids) == 0 else [int(i) for i in token_ids]
        gone = set(self.special_tokens_by_id) | {self.sp_model.eos_id(), self.sp_model.bos_id(),
                                                 self.sp_model.unk_id()}
        return self.sp_model.decode([i for i in ids if i not in gone and i >= 0])

    def build_chat_input(self, *args, **kwargs):
        raise NotImplementedError("build_chat_input is ChatGLM3's; ChatGLM2's prompt is "
                                  "tokenizer.build_prompt(query, history) or apply_chat_template")

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        config_file = next((f for f in file_names if f.endswith("tokenizer_config.json")), None)
        if config_file is not None:
            with open(config_file, encoding="utf-8") as f:
                config = json.load(f)
            config["tokenizer_class"] = "ChatGLMTokenizer"  # the published name; the chat template says "v2"
            with open(config_file + ".tmp", "w", encoding="utf-8") as f:
                f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            os.replace(config_file + ".tmp", config_file)
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)


def _read_text(name_or_path, filename, hub_kwargs):
    from transformers.utils import cached_file

    try:
        path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub_kwargs)
        if not path:
            return None
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def chatglm_format(name_or_path, hub_kwargs):
    """"chatglm2" or "chatglm3" from the repo's files, or None: tokenizer_config.json's role tokens or chat
    template (ChatGLM3's later revisions list <|user|> ...; our saved ChatGLM2 folders carry the "[Round" template,
    in tokenizer_config.json or chat_template.jinja),
    else the special-token set the repo's tokenization_chatglm.py declares (read as text, never run)."""
    config = _read_text(name_or_path, "tokenizer_config.json", hub_kwargs) or ""
    try:
        parsed = json.loads(config) if config else {}
    except ValueError:
        parsed = {}
    template = parsed.get("chat_template") if isinstance(parsed, dict) else None
    if not isinstance(template, str):  # transformers 5 saves it beside the config
        template = _read_text(name_or_path, "chat_template.jinja", hub_kwargs)
    declared = json.dumps({k: parsed.get(k) for k in ("added_tokens_decoder", "additional_special_tokens",
                                                       "extra_special_tokens")}, ensure_ascii=False)
    if isinstance(template, str) and "[Round" in template:
        return "chatglm2"
    if any(t in declared or (isinstance(template, str) and t in template) for t in ROLE_TOKENS):
        return "chatglm3"
    source = _read_text(name_or_path, "tokenization_chatglm.py", hub_kwargs)
    if source is None:
        return None
    if any(t in source for t in ROLE_TOKENS):
        return "chatglm3"
    return "chatglm2" if "[gMASK]" in source else None


_warned = []


def chatglm_tokenizer_class(name_or_path, hub_kwargs):
    """The class for a repo naming `tokenization_chatglm.ChatGLMTokenizer`: ChatGLM2's or ChatGLM3's."""
    found = chatglm_format(name_or_path, hub_kwargs)
    if found == "chatglm2":
        return ChatGLM2Tokenizer
    if found is None and not _warned:
        _warned.append(True)
        logger.warning("%s: tokenizer_config.json names ChatGLMTokenizer but neither it nor a tokenization_chatglm.py "
                       "tells ChatGLM2 from ChatGLM3; reading it as ChatGLM3's", name_or_path)
    return ChatGLMTokenizer
