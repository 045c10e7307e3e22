from .modeling_auto import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForImageTextToText,
    AutoModelForSpeechSeq2Seq,
    AutoModelForTokenClassification,
    load_config,
)

__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification",
           "AutoModelForImageTextToText", "AutoModelForSpeechSeq2Seq", "AutoModelForTokenClassification", "load_config"]
