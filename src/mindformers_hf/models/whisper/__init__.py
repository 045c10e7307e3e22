from .modeling_whisper import WhisperForConditionalGeneration, WhisperModel, WhisperPreTrainedModel

__all__ = ["WhisperForConditionalGeneration", "WhisperModel", "WhisperPreTrainedModel"]
