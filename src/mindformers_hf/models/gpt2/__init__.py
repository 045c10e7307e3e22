"""GPT-2 (`GPT2LMHeadModel`): its own decoder (modeling_gpt2.py), not LLaMA-shaped."""
from ..family import Family, family_package

FAMILY = Family("gpt2", "GPT2", module=".modeling_gpt2", causal_lm="LMHeadModel")
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
