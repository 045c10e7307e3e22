"""The ChatGLM repos' `model.chat()` / `model.stream_chat()` (their modeling_chatglm.py API) on our `generate`.
One model class serves ChatGLM2, ChatGLM3 and GLM-4; the tokenizer's `chat_format` picks the published flavour:

- ChatGLM3: the prompt is `tokenizer.build_chat_input(query, history, role)`; GLM-4 (glm-4-9b-chat's first
  revisions; later ones dropped chat()): `tokenizer.apply_chat_template(history + [query turn])`. Both stop at
  eos, <|user|> or <|observation|>; the reply is decoded up to that stop token and split at <|assistant|> into
  turns (`process_response`): a turn whose first line (metadata) is empty is text, otherwise a tool call (with
  tools declared in the system message: `{"name": metadata, "parameters": {...}}` -- ChatGLM3 writes
  `tool_call(k=v)`, GLM-4 JSON -- else `{"name", "content"}`); `history` is a list of message dicts.
- ChatGLM2: the prompt is `tokenizer.build_prompt(query, history)` ([Round n] text); no stop tokens besides the
  generation config's; the reply is decoded, stripped, and `history` (a list of (query, response) pairs) comes
  back extended by one pair; stream_chat yields once the text does not end inside a character.
stream_chat(past_key_values=, return_past_key_values=) continues a conversation from a KV cache, as the repos: with
a cache only the new turn is encoded (ChatGLM3: build_chat_input(query, role) -- [gMASK]sop again, no history;
GLM-4: the template on the query turn alone; ChatGLM2: "\n\n[Round n]..." without its first token, or the first
round whole when `history` is empty), its positions follow the cached ones, and `max_length` counts the new turn
and the reply only (the repos' stream_generate sees only those ids). The cache is our DynamicCache, extended in
place by `generate(past_key_values=)` and yielded as the third item; it then holds the prompt and the reply but
its last token (the stop token is never fed), like the repos' cache.
Differences: the tool call is read as literals, never eval()ed; the caller's `history` list is not modified
(ChatGLM3 / GLM-4 append the query to it); a reply cut by max_length keeps its last token (the repos drop it)."""
import copy
import json

import numpy as np

from ...cache_utils import DynamicCache, StaticCache
from ...generation.chat import new_tokens, parse_tool_call, stream_new_tokens
from ...utils import warn_once

_PAST = ("past_key_values", "return_past_key_values")
# The token ids a cache holds, recorded on it by stream_chat: generate needs the whole sequence (its logits
# processors read it), the cache itself keeps only keys and values.
_HELD_IDS = "_chatglm_token_ids"


def process_response(output, history, tool_arguments=parse_tool_call):
    """(content, history + the assistant turns of `output`), as the repos' process_response."""
    content, history = "", copy.deepcopy(history)
    for response in output.split("<|assistant|>"):
        if "\n" in response:
            metadata, content = response.split("\n", maxsplit=1)
        else:
            metadata, content = "", response
        if not metadata.strip():
            content = content.strip()
            history.append({"role": "assistant", "metadata": metadata, "content": content})
            content = content.replace("[[训练时间]]", "2023年")
        else:
            history.append({"role": "assistant", "metadata": metadata, "content": content})
            if history[0]["role"] == "system" and "tools" in history[0]:
                if tool_arguments is parse_tool_call:  # ChatGLM3: ```python\ntool_call(...)\n```
                    content = "\n".join(content.split("\n")[1:-1])
                content = {"name": metadata.strip(), "parameters": tool_arguments(content)}
            else:
                content = {"name": metadata.strip(), "content": content}
    return content, history


def _json_arguments(text):
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"the model's tool call arguments are not JSON: {text!r} ({error})") from None


def _refuse_past(kwargs):
    for name in _PAST:
        if kwargs.pop(name, None):
            raise NotImplementedError(f"ChatGLM chat: {name} is not supported (the repos' chat() has no cache "
                                      "either); stream_chat takes past_key_values / return_past_key_values")


def _held_ids(cache, pad_token_id):
    """The ids `cache` holds: recorded by the stream_chat that filled it, else (a cache built elsewhere, or changed
    since) pad ids in their place, with a warning: only logits processors read them."""
    past = cache.get_seq_length()
    held = getattr(cache, _HELD_IDS, None)
    if held is not None:
        prefix, tokens = held
        if len(prefix) + len(tokens) - 1 == past:
            return np.concatenate([prefix, np.asarray(tokens[:-1], np.int64)])
    if past:
        warn_once("ChatGLM stream_chat: past_key_values was not filled by stream_chat (or was changed since), so "
                  "the token ids it holds are unknown; logits processors that read earlier tokens "
                  "(repetition_penalty, no_repeat_ngram_size) see pad ids in their place")
    return np.full(past, 0 if pad_token_id is None else pad_token_id, np.int64)


def _check_cache(cache):
    if cache is not None and not isinstance(cache, (DynamicCache, StaticCache)):
        raise TypeError(f"ChatGLM stream_chat: past_key_values must be the cache an earlier stream_chat yielded "
                        f"(return_past_key_values=True), a DynamicCache or StaticCache; got {type(cache).__name__} "
                        "(the repos' tuples of torch tensors are not read)")


def _format(tokenizer):
    found = getattr(tokenizer, "chat_format", None)
    if found in ("chatglm2", "chatglm3", "glm4"):
        return found
    raise NotImplementedError(f"ChatGLM chat / stream_chat need one of the ChatGLM tokenizers (ChatGLM2, ChatGLM3, "
                              f"GLM-4), not {type(tokenizer).__name__}; use apply_chat_template and generate")


def _reply(tokenizer, tokens, stops):
    if tokens and tokens[-1] in stops:
        tokens = tokens[:-1]
    return tokenizer.decode(tokens)


def _v2_clean(text):
    """ChatGLM2's process_response."""
    return text.strip().replace("[[训练时间]]", "2023年")


class ChatGLMChatMixin:
    def _chat_setup(self, tokenizer, query, history, role, max_length, do_sample, top_p, temperature, kwargs,
                    continued=False):
        """(prompt ids, attention mask, generate kwargs, history with the query, stop ids) of ChatGLM3 / GLM-4;
        `continued`: the prompt of the query turn alone, as the repos encode it after a cache."""
        history = list(history or [])
        turn = {"role": role, "content": query}
        if _format(tokenizer) == "glm4":
            extra = {"add_special_tokens": False} if continued else {}  # as the repo passes it (a template variable)
            inputs = tokenizer.apply_chat_template(([] if continued else history) + [turn], add_generation_prompt=True,
                                                   return_dict=True, return_tensors="np", **extra)
        else:
            inputs = tokenizer.build_chat_input(query, history=None if continued else history, role=role,
                                                return_tensors="np")
        stops = [tokenizer.eos_token_id, tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")]
        gen = {"max_length": max_length, "do_sample": do_sample, "top_p": top_p, "temperature": temperature,
               "eos_token_id": stops, "pad_token_id": tokenizer.pad_token_id, **kwargs}
        return inputs, gen, history + [turn], stops

    @staticmethod
    def _tool_arguments(tokenizer):
        return _json_arguments if _format(tokenizer) == "glm4" else parse_tool_call

    def chat(self, tokenizer, query, history=None, *args, **kwargs):
        """ChatGLM3 / GLM-4: chat(tokenizer, query, history=None, role="user", max_length=8192, num_beams=1,
        do_sample=True, top_p=0.8, temperature=0.8, logits_processor=None, **kwargs) -> (response, history).
        ChatGLM2: chat(tokenizer, query, history=None, max_length=8192, num_beams=1, do_sample=True, top_p=0.8,
        temperature=0.8, logits_processor=None, **kwargs) -> (response, history + [(query, response)])."""
        if _format(tokenizer) == "chatglm2":
            return self._chat_v2(tokenizer, query, history, *args, **kwargs)
        return self._chat_v3(tokenizer, query, history, *args, **kwargs)

    def stream_chat(self, tokenizer, query, history=None, *args, **kwargs):
        """Yields (response so far, history) after each token whose text is complete (no trailing U+FFFD), and
        the final reply in any case; the arguments are chat()'s (ChatGLM3 / GLM-4 also take `role`), plus the
        repos' past_key_values (a cache yielded by an earlier call: only the new turn is fed) and
        return_past_key_values (yield (response, history, cache))."""
        if _format(tokenizer) == "chatglm2":
            return self._stream_chat_v2(tokenizer, query, history, *args, **kwargs)
        return self._stream_chat_v3(tokenizer, query, history, *args, **kwargs)

    def _chat_v3(self, tokenizer, query, history=None, role="user", max_length=8192, num_beams=1, do_sample=True,
                 top_p=0.8, temperature=0.8, logits_processor=None, **kwargs):
        _refuse_past(kwargs)
        inputs, gen, history, stops = self._chat_setup(tokenizer, query, history, role, max_length, do_sample,
                                                       top_p, temperature, kwargs)
        tokens = new_tokens(self, inputs["input_ids"], inputs["attention_mask"], num_beams=num_beams,
                            logits_processor=logits_processor, **gen)
        return process_response(_reply(tokenizer, tokens, stops), history, self._tool_arguments(tokenizer))

    def _stream_chat_v3(self, tokenizer, query, history=None, role="user", past_key_values=None, max_length=8192,
                        do_sample=True, top_p=0.8, temperature=0.8, logits_processor=None,
                        return_past_key_values=False, **kwargs):
        _check_cache(past_key_values)  # before the generator: raises at the call
        inputs, gen, history, stops = self._chat_setup(tokenizer, query, history, role, max_length, do_sample,
                                                       top_p, temperature, kwargs, past_key_values is not None)
        tool_arguments = self._tool_arguments(tokenizer)
        return self._stream(inputs, logits_processor, gen, lambda tokens: _reply(tokenizer, tokens, stops),
                            lambda response: process_response(response, history, tool_arguments),
                            past_key_values, return_past_key_values, tokenizer.pad_token_id)

    def _chat_v2(self, tokenizer, query, history=None, max_length=8192, num_beams=1, do_sample=True, top_p=0.8,
                 temperature=0.8, logits_processor=None, **kwargs):
        _refuse_past(kwargs)
        history = list(history or [])
        inputs = tokenizer([tokenizer.build_prompt(query, history=history)], return_tensors="np")
        tokens = new_tokens(self, inputs["input_ids"], inputs["attention_mask"], max_length=max_length,
                            num_beams=num_beams, do_sample=do_sample, top_p=top_p, temperature=temperature,
                            logits_processor=logits_processor, **kwargs)
        response = _v2_clean(tokenizer.decode(tokens))
        return response, history + [(query, response)]

    def _stream_chat_v2(self, tokenizer, query, history=None, past_key_values=None, max_length=8192,
                        do_sample=True, top_p=0.8, temperature=0.8, logits_processor=None,
                        return_past_key_values=False, **kwargs):
        _check_cache(past_key_values)
        history = list(history or [])
        if past_key_values is not None and history:  # the repo's build_stream_inputs: the new round after the cache
            ids = tokenizer.encode(f"\n\n[Round {len(history) + 1}]\n\n问：{query}\n\n答：", add_special_tokens=False)
            ids = np.asarray([ids[1:]], np.int64)  # the repo drops the first id (SentencePiece's "▁" before "\n")
            inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        else:
            inputs = tokenizer([tokenizer.build_prompt(query, history=history)], return_tensors="np")
        gen = {"max_length": max_length, "do_sample": do_sample, "top_p": top_p, "temperature": temperature,
               **kwargs}
        return self._stream(inputs, logits_processor, gen, tokenizer.decode,
                            lambda response: (_v2_clean(response), history + [(query, _v2_clean(response))]),
                            past_key_values, return_past_key_values, tokenizer.pad_token_id)

    def _stream(self, inputs, logits_processor, gen, decode, finish, cache=None, return_cache=False, pad=None):
        ids, mask = np.asarray(inputs["input_ids"]).reshape(1, -1), np.asarray(inputs["attention_mask"]).reshape(1, -1)
        cached = cache is not None or return_cache
        if cached:
            cache = DynamicCache(config=self.config) if cache is None else cache
            held = _held_ids(cache, pad)
            ids = np.concatenate([held[None], ids], 1)
            mask = np.concatenate([np.ones((1, len(held)), mask.dtype), mask], 1)
            if gen.get("max_length") is not None:  # the repos' max_length counts the new turn and the reply only
                gen["max_length"] += len(held)
            gen["past_key_values"] = cache
        response, held_back, prefix = "", False, ids[0].astype(np.int64)
        # lockstep: the yielded cache holds exactly what was yielded (but the last token), also when the caller stops
        for tokens in stream_new_tokens(self, ids, mask, lockstep=cached, logits_processor=logits_processor, **gen):
            if cached:
                setattr(cache, _HELD_IDS, (prefix, tokens))
            response = decode(tokens)
            held_back = not response or response[-1] == "\ufffd"
            if not held_back:
                yield finish(response) + ((cache,) if return_cache else ())
        if held_back and response:  # the end came inside a character: the last state is still the reply
            yield finish(response) + ((cache,) if return_cache else ())
