"""Mistral: LLaMA whose attention sees only the last `sliding_window` keys (read from the config by
LlamaModel.causal_masks); nothing else differs."""
from ..family import Family, family_package

FAMILY = Family("mistral", "Mistral")
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
