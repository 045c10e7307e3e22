"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`, AutoModelForImageTextToText): Qwen2-VL's classes
(models/qwen2_vl) with the Qwen2.5 vision tower -- window attention outside `fullatt_block_indexes`, RMSNorms, a
gated MLP -- and videos' temporal positions spaced by `tokens_per_second * second_per_grid_ts`."""
from ..family import Family, family_package
from ..qwen2_vl import QWEN2_VL_DECODER

FAMILIES = (
    Family("qwen2_5_vl", "Qwen2_5_VL", QWEN2_VL_DECODER, module=".modeling_qwen2_5_vl",
           causal_lm="ForConditionalGeneration", lm_task="ForImageTextToText", heads=()),
    Family("qwen2_5_vl_text", "Qwen2_5_VL", QWEN2_VL_DECODER, module=".modeling_qwen2_5_vl",
           causal_lm="ForConditionalGeneration", lm_task=None, heads=(), text_prefix="Qwen2_5_VLText"),
)
__all__, __getattr__, __dir__ = family_package(globals(), *FAMILIES)
