"""Baichuan / Baichuan2's `model.chat(tokenizer, messages, stream=False)` (the Chat repos' modeling and
generation_utils.py API) on our `generate`.

As published (build_chat_input): the system text's ids, then each round (a user message and what follows it)
as <user_token_id> + ids of the content / <assistant_token_id> + ids, the latest rounds that fit
`model_max_length - max_new_tokens` (at least the last one), <assistant_token_id> when the last message is not
the assistant's, and the prompt cut to its last `model_max_length - max_new_tokens` tokens. The reply is
decoded with special tokens skipped; `stream=True` returns an iterator of the reply so far (after each token)."""
from ...generation.chat import new_tokens, stream_new_tokens
from .tokenization_baichuan import ASSISTANT_TOKEN_ID, USER_TOKEN_ID


def build_chat_input(model, tokenizer, messages, max_new_tokens=0):
    """The prompt ids of `messages` ([{"role": "system" | "user" | "assistant", "content": ...}])."""
    config = model.generation_config
    user = getattr(config, "user_token_id", USER_TOKEN_ID)
    assistant = getattr(config, "assistant_token_id", ASSISTANT_TOKEN_ID)
    max_new_tokens = max_new_tokens or config.max_new_tokens or 0
    max_input = model.config.model_max_length - max_new_tokens
    system, rounds, current = "", [], []
    for i, message in enumerate(messages):
        if message["role"] == "system":
            if i != 0:
                raise ValueError("Baichuan chat: the system message must come first")
            system = message["content"]
            continue
        if message["role"] == "user" and current:
            rounds.append(current)
            current = []
        current.append(message)
    if current:
        rounds.append(current)
    system_ids = tokenizer.encode(system)
    max_history = max_input - len(system_ids)
    history = []
    for turn in reversed(rounds):
        ids = []
        for message in turn:
            ids.append(user if message["role"] == "user" else assistant)
            ids.extend(tokenizer.encode(message["content"]))
        if history and len(history) + len(ids) > max_history:
            break
        history = ids + history
        if len(history) >= max_history:
            break
    ids = system_ids + history
    if messages[-1]["role"] != "assistant":
        ids.append(assistant)
    return ids[-max_input:]


class BaichuanChatMixin:
    def chat(self, tokenizer, messages, stream=False, generation_config=None):
        """The reply to `messages` (a str), or with stream=True an iterator of the reply so far."""
        config = generation_config or self.generation_config
        ids = build_chat_input(self, tokenizer, messages, config.max_new_tokens)
        if stream:
            return (tokenizer.decode(tokens, skip_special_tokens=True)
                    for tokens in stream_new_tokens(self, ids, generation_config=config))
        return tokenizer.decode(new_tokens(self, ids, generation_config=config), skip_special_tokens=True)
