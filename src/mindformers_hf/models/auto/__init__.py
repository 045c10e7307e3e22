from .modeling_auto import AutoModel, AutoModelForCausalLM, load_config

__all__ = ["AutoModel", "AutoModelForCausalLM", "load_config"]
