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
Differences: the tool call is read as literals, never eval()ed; the caller's `history` list is not modified
(ChatGLM3 / GLM-4 append the query to it); a reply cut by max_length keeps its last token (the repos drop it);
`past_key_values` / `return_past_key_values` in stream_chat raise (the conversation is re-encoded each turn)."""
import copy
import json

from ...generation.chat import new_tokens, parse_tool_call, stream_new_tokens

_PAST = ("past_key_values", "return_past_key_values")


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


def _refuse_past(kwargs, past_key_values=None, return_past_key_values=False):
    if past_key_values is not None or return_past_key_values:
        name = "past_key_values" if past_key_values is not None else "return_past_key_values"
        raise NotImplementedError(f"ChatGLM stream_chat: {name} (reusing the KV cache across turns) is not "
                                  "supported; pass the conversation in `history` and it is encoded again")
    for name in _PAST:
        if kwargs.pop(name, None):
            raise NotImplementedError(f"ChatGLM chat: {name} is not supported")


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
    def _chat_setup(self, tokenizer, query, history, role, max_length, do_sample, top_p, temperature, kwargs):
        """(prompt ids, attention mask, generate kwargs, history with the query, stop ids) of ChatGLM3 / GLM-4."""
        history = list(history or [])
        if _format(tokenizer) == "glm4":
            inputs = tokenizer.apply_chat_template(history + [{"role": role, "content": query}],
                                                   add_generation_prompt=True, return_dict=True, return_tensors="np")
        else:
            inputs = tokenizer.build_chat_input(query, history=history, role=role, return_tensors="np")
        stops = [tokenizer.eos_token_id, tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")]
        gen = {"max_length": max_length, "do_sample": do_sample, "top_p": top_p, "temperature": temperature,
               "eos_token_id": stops, "pad_token_id": tokenizer.pad_token_id, **kwargs}
        return inputs, gen, history + [{"role": role, "content": query}], stops

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
        repos' past_key_values / return_past_key_values, which raise."""
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
        _refuse_past(kwargs, past_key_values, return_past_key_values)  # before the generator: raises at the call
        inputs, gen, history, stops = self._chat_setup(tokenizer, query, history, role, max_length, do_sample,
                                                       top_p, temperature, kwargs)
        tool_arguments = self._tool_arguments(tokenizer)
        return self._stream(inputs, logits_processor, gen, lambda tokens: _reply(tokenizer, tokens, stops),
                            lambda response: process_response(response, history, tool_arguments))

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
        _refuse_past(kwargs, past_key_values, return_past_key_values)
        history = list(history or [])
        inputs = tokenizer([tokenizer.build_prompt(query, history=history)], return_tensors="np")
        gen = {"max_length": max_length, "do_sample": do_sample, "top_p": top_p, "temperature": temperature,
               **kwargs}
        return self._stream(inputs, logits_processor, gen, tokenizer.decode,
                            lambda response: (_v2_clean(response), history + [(query, _v2_clean(response))]))

    def _stream(self, inputs, logits_processor, gen, decode, finish):
        response, held = "", False
        for tokens in stream_new_tokens(self, inputs["input_ids"], inputs["attention_mask"],
                                        logits_processor=logits_processor, **gen):
            response = decode(tokens)
            held = not response or response[-1] == "\ufffd"
            if not held:
                yield finish(response)
        if held and response:  # the end came inside a character: the last state is still the reply
            yield finish(response)
