"""Gemma: LLaMA with RMSNorms scaling by (1 + weight), embeddings times sqrt(hidden_size), a GeGLU MLP
(hidden_act "gelu_pytorch_tanh"), head_dim from the config and a tied LM head."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("gemma", "Gemma", DecoderVariant(norm_offset=True, embed_scale=True))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
