from .modeling_mixtral import MixtralForCausalLM, MixtralModel, MixtralPreTrainedModel

__all__ = ["MixtralForCausalLM", "MixtralModel", "MixtralPreTrainedModel"]
