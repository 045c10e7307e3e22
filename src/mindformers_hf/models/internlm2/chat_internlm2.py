"""InternLM2's `model.chat()` / `model.stream_chat()` and `build_inputs` (the repos' modeling_internlm2.py API) on
our `generate`.

As published: the prompt is ChatML text ("<|im_start|>system\\n{meta_instruction}<|im_end|>\\n", then each
(query, response) pair and the query as user / assistant turns, then "<|im_start|>assistant\\n") tokenized
with the tokenizer's <s>; generation stops at </s> or <|im_end|>; the reply is decoded with special tokens
skipped and cut at "<|im_end|>"; `history` comes back extended by (query, response).
Differences: `stream_chat` yields the decoded text of all tokens so far (the repo's streamer decodes and
concatenates one token at a time) and takes no `streamer=`."""
from ...generation.chat import new_tokens, stream_new_tokens

META_INSTRUCTION = (
    "You are an AI assistant whose name is InternLM (书生·浦语).\n"
    "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory "
    "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the user such as "
    "English and 中文."
)


def build_prompt(tokenizer, query, history=None, meta_instruction=""):
    """The prompt text of the published build_inputs (before tokenization)."""
    prompt = "" if tokenizer.add_bos_token else tokenizer.bos_token
    if meta_instruction:
        prompt += f"<|im_start|>system\n{meta_instruction}<|im_end|>\n"
    for old_query, response in history or []:
        prompt += f"<|im_start|>user\n{old_query}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>\n"
    return prompt + f"<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"


class InternLM2ChatMixin:
    # what InternLM (v1) changes (models/internlm/chat_internlm.py): the prompt text and the end-of-turn token
    _build_prompt = staticmethod(build_prompt)
    _end_of_turn = "<|im_end|>"

    def build_inputs(self, tokenizer, query, history=None, meta_instruction="", return_tensors="np"):
        return tokenizer([self._build_prompt(tokenizer, query, history, meta_instruction)],
                         return_tensors=return_tensors)

    def _chat_setup(self, tokenizer, query, history, meta_instruction, max_new_tokens, do_sample, temperature,
                    top_p, kwargs):
        if kwargs.pop("streamer", None) is not None:
            raise NotImplementedError(f"{type(self).__name__} chat: streamer= is not supported; use model.stream_chat(...)")
        inputs = self.build_inputs(tokenizer, query, history, meta_instruction)
        stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(self._end_of_turn)]
        gen = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature, "top_p": top_p,
               "eos_token_id": stops, **kwargs}
        return inputs, gen

    def _response(self, tokenizer, tokens):
        return tokenizer.decode(tokens, skip_special_tokens=True).split(self._end_of_turn)[0]

    def chat(self, tokenizer, query, history=None, streamer=None, max_new_tokens=1024, do_sample=True,
             temperature=0.8, top_p=0.8, meta_instruction=META_INSTRUCTION, **kwargs):
        """(response, history + [(query, response)])."""
        inputs, gen = self._chat_setup(tokenizer, query, history, meta_instruction, max_new_tokens, do_sample,
                                       temperature, top_p, {**kwargs, "streamer": streamer})
        response = self._response(tokenizer, new_tokens(self, inputs["input_ids"], inputs["attention_mask"], **gen))
        return response, list(history or []) + [(query, response)]

    def stream_chat(self, tokenizer, query, history=None, max_new_tokens=1024, do_sample=True, temperature=0.8,
                    top_p=0.8, meta_instruction=META_INSTRUCTION, **kwargs):
        """Yields (response so far, history + [(query, response so far)]) after every token."""
        inputs, gen = self._chat_setup(tokenizer, query, history, meta_instruction, max_new_tokens, do_sample,
                                       temperature, top_p, kwargs)
        for tokens in stream_new_tokens(self, inputs["input_ids"], inputs["attention_mask"], **gen):
            response = self._response(tokenizer, tokens)
            yield response, list(history or []) + [(query, response)]
