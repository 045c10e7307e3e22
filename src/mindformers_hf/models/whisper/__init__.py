"""Whisper (`WhisperForConditionalGeneration`): an encoder-decoder speech model (modeling_whisper.py), served by
AutoModelForSpeechSeq2Seq; its generate rules are generation_whisper.py."""
from ..family import Family, family_package

FAMILY = Family("whisper", "Whisper", module=".modeling_whisper", causal_lm="ForConditionalGeneration",
                lm_task="ForSpeechSeq2Seq", heads=())
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
