"""ChatGLM3's `model.chat()` / `model.stream_chat()` (the repo's modeling_chatglm.py API) on our `generate`.

As published: the prompt is `tokenizer.build_chat_input(query, history, role)`; generation stops at </s>,
<|user|> or <|observation|>; the reply is decoded up to that stop token and split at <|assistant|> into turns
(`process_response`): a turn whose first line (metadata) is empty is text, otherwise a tool call (with tools
declared in the system message: `{"name": metadata, "parameters": {...}}`, else `{"name", "content"}`).
Differences: the tool call is read as literals, never eval()ed; the caller's `history` list is not modified
(the repo appends the query to it); a reply cut by max_length keeps its last token (the repo drops it)."""
import copy

from ...generation.chat import new_tokens, parse_tool_call, stream_new_tokens


def process_response(output, history):
    """(content, history + the assistant turns of `output`), as the repo's process_response."""
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
                content = "\n".join(content.split("\n")[1:-1])
                content = {"name": metadata.strip(), "parameters": parse_tool_call(content)}
            else:
                content = {"name": metadata.strip(), "content": content}
    return content, history


class ChatGLMChatMixin:
    def _chat_setup(self, tokenizer, query, history, role, max_length, do_sample, top_p, temperature, kwargs):
        for name in ("past_key_values", "return_past_key_values"):
            if kwargs.pop(name, None):
                raise NotImplementedError(f"ChatGLM stream_chat: {name} is not supported; pass the full history")
        if not hasattr(tokenizer, "build_chat_input"):
            raise NotImplementedError(f"ChatGLM chat / stream_chat follow ChatGLM3 and need its tokenizer, not "
                                      f"{type(tokenizer).__name__}; for GLM-4 use tokenizer.apply_chat_template "
                                      "and model.generate, as the GLM-4 repos do")
        history = list(history or [])
        inputs = tokenizer.build_chat_input(query, history=history, role=role, return_tensors="np")
        stops = [tokenizer.eos_token_id, tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")]
        gen = {"max_length": max_length, "do_sample": do_sample, "top_p": top_p, "temperature": temperature,
               "eos_token_id": stops, "pad_token_id": tokenizer.pad_token_id, **kwargs}
        return inputs, gen, history + [{"role": role, "content": query}], stops

    @staticmethod
    def _reply(tokenizer, tokens, stops):
        if tokens and tokens[-1] in stops:
            tokens = tokens[:-1]
        return tokenizer.decode(tokens)

    def chat(self, tokenizer, query, history=None, role="user", max_length=8192, num_beams=1, do_sample=True,
             top_p=0.8, temperature=0.8, logits_processor=None, **kwargs):
        """(response, history): one reply to `query` after `history` (a list of {"role", "content", ...})."""
        inputs, gen, history, stops = self._chat_setup(tokenizer, query, history, role, max_length, do_sample,
                                                       top_p, temperature, kwargs)
        tokens = new_tokens(self, inputs["input_ids"], inputs["attention_mask"], num_beams=num_beams,
                            logits_processor=logits_processor, **gen)
        return process_response(self._reply(tokenizer, tokens, stops), history)

    def stream_chat(self, tokenizer, query, history=None, role="user", past_key_values=None, max_length=8192,
                    do_sample=True, top_p=0.8, temperature=0.8, logits_processor=None, return_past_key_values=False,
                    **kwargs):
        """Yields (response so far, history) after each token whose text is complete (no trailing U+FFFD), and
        the final reply in any case."""
        kwargs.update(past_key_values=past_key_values, return_past_key_values=return_past_key_values)
        inputs, gen, history, stops = self._chat_setup(tokenizer, query, history, role, max_length, do_sample,
                                                       top_p, temperature, kwargs)
        response, held = "", False
        for tokens in stream_new_tokens(self, inputs["input_ids"], inputs["attention_mask"],
                                        logits_processor=logits_processor, **gen):
            response = self._reply(tokenizer, tokens, stops)
            held = not response or response[-1] == "\ufffd"
            if not held:
                yield process_response(response, history)
        if held and response:  # the end came inside a character: the last state is still the reply
            yield process_response(response, history)
