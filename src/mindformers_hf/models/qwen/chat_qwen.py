"""Qwen (v1)'s `model.chat()` / `model.chat_stream()` and `make_context` (the repos' modeling_qwen.py and
qwen_generation_utils.py API) on our `generate`; only the "chatml" chat format of the Chat models.

As published: `make_context` encodes the prompt piece by piece (role, "\\n", content; contents with special
tokens as text), keeps the latest history turns that fit `max_window_size`; generation stops at <|im_end|>,
<|im_start|> (and the generation config's eos, <|endoftext|>); the reply is the text before that token,
stripped, and `history` (a list of (query, response) pairs) comes back extended by one pair.
Differences: a reply cut by max_length keeps its last token (the repo drops it); `stop_words_ids` may hold
single tokens only; `chat_stream` yields the text of the tokens so far with an incomplete trailing character
left out (the repo decodes with errors="ignore")."""
import copy

from ...generation.chat import new_tokens, stream_new_tokens
from .tokenization_qwen import DEFAULT_SYSTEM


def make_context(tokenizer, query, history=None, system="", max_window_size=6144, chat_format="chatml"):
    """(prompt text, prompt ids) as the published make_context builds them."""
    if chat_format != "chatml":
        raise NotImplementedError(f"Qwen chat_format={chat_format!r}: only 'chatml' (the Chat models) is supported")
    im_start, im_end = "<|im_start|>", "<|im_end|>"
    nl = tokenizer.encode("\n")
    # Qwen-VL-Chat's make_context (its qwen_generation_utils.py) recognises the image tags in messages
    allowed = set(getattr(tokenizer, "IMAGE_ST", ()))

    def turn(role, content):
        return f"{role}\n{content}", (tokenizer.encode(role, allowed_special=allowed) + nl
                                      + tokenizer.encode(content, allowed_special=allowed))

    def wrapped(role, content):
        text, ids = turn(role, content)
        return text, [tokenizer.im_start_id] + ids + [tokenizer.im_end_id]

    system_text, system_ids = wrapped("system", system)
    raw_text, context = "", []
    for old_query, response in reversed(history or []):
        query_text, query_ids = wrapped("user", old_query)
        response_text, response_ids = wrapped("assistant", response)
        ids = nl + query_ids + nl + response_ids
        if len(system_ids) + len(ids) + len(context) >= max_window_size:
            break
        context = ids + context
        raw_text = f"\n{im_start}{query_text}{im_end}\n{im_start}{response_text}{im_end}" + raw_text
    context = system_ids + context + nl + wrapped("user", query)[1] + nl + [tokenizer.im_start_id] + \
        tokenizer.encode("assistant") + nl
    raw_text = (f"{im_start}{system_text}{im_end}" + raw_text
                + f"\n{im_start}user\n{query}{im_end}\n{im_start}assistant\n")
    return raw_text, context


class QWenChatMixin:
    def _chat_setup(self, tokenizer, query, history, system, stop_words_ids, generation_config, kwargs):
        config = generation_config if generation_config is not None else self.generation_config
        window = kwargs.pop("max_window_size", None) or getattr(config, "max_window_size", None) or 6144
        _, context = make_context(tokenizer, query, history, system, window, getattr(config, "chat_format", "chatml"))
        stops = [tokenizer.im_end_id, tokenizer.im_start_id]
        for words in stop_words_ids or []:
            if len(words) != 1:
                raise NotImplementedError("Qwen chat: stop_words_ids of more than one token are not supported")
            stops.append(int(words[0]))
        eos = config.eos_token_id
        stops += [e for e in ([eos] if isinstance(eos, int) else eos or []) if e not in stops]
        if getattr(self.config, "visual", None) and "pixel_values" not in kwargs:
            # Qwen-VL-Chat: the images the prompt names (<img>path</img>), opened as the published model does
            from .processing_qwen_vl import QWenVLImageProcessor

            processor = QWenVLImageProcessor.from_config(self.config)
            if processor.image_paths(context):
                kwargs["pixel_values"] = processor.from_input_ids(context)
        return context, stops, {"generation_config": generation_config, "eos_token_id": stops, **kwargs}

    @staticmethod
    def _before_stop(tokens, stops):
        for i, token in enumerate(tokens):
            if token in stops:
                return tokens[:i]
        return tokens

    def chat(self, tokenizer, query, history, system=DEFAULT_SYSTEM, stop_words_ids=None, generation_config=None,
             **kwargs):
        """(response, history + [(query, response)])."""
        if "stream" in kwargs:
            raise ValueError("Qwen chat: stream=True is gone, use model.chat_stream(...) (as the repo says)")
        context, stops, gen = self._chat_setup(tokenizer, query, history, system, stop_words_ids,
                                               generation_config, kwargs)
        response = tokenizer.decode(self._before_stop(new_tokens(self, context, **gen), stops)).strip()
        return response, copy.deepcopy(list(history or [])) + [(query, response)]

    def chat_stream(self, tokenizer, query, history, system=DEFAULT_SYSTEM, stop_words_ids=None,
                    logits_processor=None, generation_config=None, **kwargs):
        """Yields the reply so far after every token."""
        context, stops, gen = self._chat_setup(tokenizer, query, history, system, stop_words_ids,
                                               generation_config, kwargs)
        for tokens in stream_new_tokens(self, context, logits_processor=logits_processor, **gen):
            yield tokenizer.decode(self._before_stop(tokens, stops), skip_special_tokens=True).rstrip("\ufffd")
