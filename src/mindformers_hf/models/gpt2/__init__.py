from .modeling_gpt2 import GPT2LMHeadModel, GPT2Model, GPT2PreTrainedModel

__all__ = ["GPT2LMHeadModel", "GPT2Model", "GPT2PreTrainedModel"]
