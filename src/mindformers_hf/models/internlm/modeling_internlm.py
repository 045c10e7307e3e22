"""InternLM v1 (`InternLMForCausalLM`: internlm-7b, internlm-chat-7b, internlm-20b) on the LLaMA classes.

Its checkpoints use LLaMA's tensor names; the model is LLaMA with a bias on q/k/v/o (`bias`, read as
`attention_bias` by InternLMConfig) and as many kv heads as query heads. No code from the repo runs.
`chat` / `stream_chat` / `build_inputs` are internlm-chat-7b's (chat_internlm.py).
"""
from ..llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from .chat_internlm import InternLMChatMixin


class InternLMPreTrainedModel(LlamaPreTrainedModel):
    pass


class InternLMModel(LlamaModel):
    pass


class InternLMForCausalLM(InternLMChatMixin, LlamaForCausalLM):
    pass
