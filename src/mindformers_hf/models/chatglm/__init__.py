"""ChatGLM2/3 and GLM-4-9B-chat in their original format (`model_type` "chatglm"), read natively: transformers'
GLM with q/k/v fused (modeling_chatglm.py's renaming table). The repos' AutoModel is the causal LM."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("chatglm", "ChatGLM", DecoderVariant(fused_qkv=True, fused_gate_up=True, interleaved_rotary=True),
                module=".modeling_chatglm", causal_lm="ForConditionalGeneration", heads=(),
                auto_model="ForConditionalGeneration", config=".configuration_chatglm:ChatGLMConfig",
                architectures=("ChatGLMModel", "ChatGLMForConditionalGeneration"))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
