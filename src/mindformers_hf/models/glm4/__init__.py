from .modeling_glm4 import Glm4ForCausalLM, Glm4Model, Glm4PreTrainedModel

__all__ = ["Glm4ForCausalLM", "Glm4Model", "Glm4PreTrainedModel"]
