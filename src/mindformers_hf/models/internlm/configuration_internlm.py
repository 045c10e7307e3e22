"""InternLM (v1: internlm-7b / -20b, `model_type` "internlm", `InternLMForCausalLM`): the field names and
defaults of the repos' configuration_internlm.py, read without running it. Tensor-free (no MindSpore).

InternLM v1 is LLaMA with a bias on q/k/v/o (`bias`) and always one kv head per query head."""
from ..internlm2.configuration_internlm2 import InternLMConfigFields


class InternLMConfig(InternLMConfigFields):
    model_type = "internlm"

    def __post_init__(self, **kwargs):
        # modeling_internlm.py builds k/v with num_attention_heads heads whatever the config says
        self.num_key_value_heads = self.num_attention_heads
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
