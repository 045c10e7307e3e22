"""OpenAI request bodies -> (prompts, SamplingParams), with a 400 naming the field for anything malformed.

Fields we accept and do not act on are listed in IGNORED (one warning each); anything else unknown is
ignored silently, as OpenAI clients send extra fields (`user`, `metadata`, ...).
"""
from ..utils import warn_once
from .sampling_params import SamplingParams

IGNORED = ("presence_penalty", "frequency_penalty", "logit_bias", "best_of", "suffix", "tools", "tool_choice",
           "response_format", "parallel_tool_calls")


class APIError(Exception):
    def __init__(self, status, message, kind="invalid_request_error", param=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.headers = status, message, kind, param, headers

    def body(self):
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


def bad(message, param=None):
    return APIError(400, message, param=param)


def _field(body, name, kinds, default=None, rule=None):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:
        raise bad(f"'{name}' must be {rule or ' or '.join(k.__name__ for k in kinds)}", name)
    if not isinstance(value, kinds):
        raise bad(f"'{name}' must be {rule or ' or '.join(k.__name__ for k in kinds)}, got {value!r}", name)
    return value


def sampling_params(body, default_max_tokens, chat):
    for name in IGNORED:
        if body.get(name) not in (None, 0, 0.0, [], {}, "auto", "none"):
            warn_once(f"serve: request field {name!r} is accepted and ignored")
    max_tokens = _field(body, "max_tokens", (int,), None, "an integer >= 1")
    if chat:
        max_tokens = _field(body, "max_completion_tokens", (int,), max_tokens, "an integer >= 1")
    stop = _field(body, "stop", (str, list), None, "a string or a list of strings")
    if chat:
        logprobs = _field(body, "top_logprobs", (int,), 0) if _field(body, "logprobs", (bool,), False) else None
    else:
        logprobs = _field(body, "logprobs", (int,), None, "an integer in [0, 5]")
    params = SamplingParams(
        n=_field(body, "n", (int,), 1), max_tokens=max_tokens if max_tokens is not None else default_max_tokens,
        temperature=float(_field(body, "temperature", (int, float), 1.0)),
        top_p=float(_field(body, "top_p", (int, float), 1.0)), top_k=_field(body, "top_k", (int,), 0),
        seed=_field(body, "seed", (int,), None), stop=stop,
        stop_token_ids=_field(body, "stop_token_ids", (list,), []),
        ignore_eos=_field(body, "ignore_eos", (bool,), False),
        logprobs=logprobs, skip_special_tokens=_field(body, "skip_special_tokens", (bool,), True))
    try:
        return params.validate()
    except ValueError as error:
        raise bad(str(error), str(error).split()[0]) from None


def completion_prompts(body, tokenizer):
    """'prompt' (a string, a list of strings, token ids or a list of token-id lists) -> [token ids]."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompt = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise bad("'prompt' must be a string, a list of strings, a list of token ids or a list of those", "prompt")
    out = []
    for item in prompt:
        if isinstance(item, str):
            out.append(tokenizer(item)["input_ids"])
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            out.append(list(item))
        else:
            raise bad("'prompt' must be a string, a list of strings, a list of token ids or a list of those", "prompt")
    return out


def chat_prompt(body, tokenizer):
    """'messages' through the tokenizer's chat template -> token ids."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list", "messages")
    clean = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad("each message must be an object with a 'role' string", "messages")
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad("only text content parts are supported", "messages")
            content = "".join(p["text"] for p in content)
        if content is not None and not isinstance(content, str):
            raise bad("message 'content' must be a string or a list of text parts", "messages")
        clean.append({**message, "content": content or ""})
    if getattr(tokenizer, "chat_template", None) is None:
        raise bad("this model's tokenizer has no chat template; use /v1/completions")
    try:
        text = tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # noqa: BLE001 -- a template's own check (roles, ...) is the client's error
        raise bad(f"the chat template rejected the messages: {error}", "messages") from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]
