from .modeling_glm import GlmForCausalLM, GlmModel, GlmPreTrainedModel

__all__ = ["GlmForCausalLM", "GlmModel", "GlmPreTrainedModel"]
