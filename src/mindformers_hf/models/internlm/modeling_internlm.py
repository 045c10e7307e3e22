"""InternLM v1 (`InternLMForCausalLM`): LLaMA's tensor names and classes (the declaration in __init__.py says the
rest), with internlm-chat-7b's `chat` / `stream_chat` / `build_inputs` on the causal LM (chat_internlm.py)."""
from ..family import build_classes
from . import FAMILY
from .chat_internlm import InternLMChatMixin

InternLMPreTrainedModel, InternLMModel, InternLMForCausalLM = build_classes(FAMILY, __name__,
                                                                            chat=InternLMChatMixin)
