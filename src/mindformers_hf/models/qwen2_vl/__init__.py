"""Qwen2-VL (`Qwen2VLForConditionalGeneration`, AutoModelForImageTextToText): a vision tower (vision_qwen2_vl.py)
feeding image and video features into Qwen2's decoder with M-RoPE positions (modeling_qwen2_vl.py). Two model
types: the multimodal one and its text model (`Qwen2VLTextModel`, model_type qwen2_vl_text), whose decoder layers
are LLaMA's with Qwen2's biases."""
from ..family import DecoderVariant, Family, family_package

QWEN2_VL_DECODER = DecoderVariant(qkv_bias=True, o_bias=False)
FAMILIES = (
    Family("qwen2_vl", "Qwen2VL", QWEN2_VL_DECODER, module=".modeling_qwen2_vl", causal_lm="ForConditionalGeneration",
           lm_task="ForImageTextToText", heads=()),
    Family("qwen2_vl_text", "Qwen2VL", QWEN2_VL_DECODER, module=".modeling_qwen2_vl",
           causal_lm="ForConditionalGeneration", lm_task=None, heads=(), text_prefix="Qwen2VLText"),
)
__all__, __getattr__, __dir__ = family_package(globals(), *FAMILIES)
