"""LLaMA (LLaMA 2/3/3.1, CodeLlama, Yi, DeepSeek-Coder, SmolLM): the decoder every LLaMA-shaped family builds on."""
from ..family import Family, family_package

FAMILY = Family("llama", "Llama", module=".modeling_llama")
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
