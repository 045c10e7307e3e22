from .modeling_auto import AutoConfig, AutoModel, AutoModelForCausalLM, load_config

__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "load_config"]
