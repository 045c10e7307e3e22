"""Qwen2.5-VL: Qwen2-VL's classes under transformers' names. What differs is read from the config: the vision
tower's variant from the vision config's model_type (vision_qwen2_vl.py), the video frames' spacing from
`tokens_per_second` (modeling_qwen2_vl.py `get_rope_index`)."""
from ..qwen2_vl.modeling_qwen2_vl import (Qwen2VLForConditionalGeneration, Qwen2VLModel, Qwen2VLPreTrainedModel,
                                          Qwen2VLTextModel)


class Qwen2_5_VLPreTrainedModel(Qwen2VLPreTrainedModel):
    pass


class Qwen2_5_VLTextModel(Qwen2VLTextModel):
    pass


class Qwen2_5_VLModel(Qwen2VLModel):
    pass


class Qwen2_5_VLForConditionalGeneration(Qwen2VLForConditionalGeneration):
    pass
