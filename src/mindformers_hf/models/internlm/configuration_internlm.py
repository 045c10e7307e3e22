"""InternLM (v1: internlm-7b / -20b, `model_type` "internlm", `InternLMForCausalLM`): the field names and
defaults of the repos' configuration_internlm.py, read without running it. Tensor-free (no MindSpore).

InternLM v1 is LLaMA with a bias on q/k/v/o (`bias`) and always one kv head per query head."""
from transformers import PretrainedConfig


class InternLMConfig(PretrainedConfig):
    model_type = "internlm"
    attribute_map = {"attention_bias": "bias"}  # the LLaMA classes read `attention_bias`

    vocab_size: int = 103168
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    bias: bool = True
    rope_parameters: dict | None = None  # v4 `rope_theta` / `rope_scaling` land here

    def __post_init__(self, **kwargs):
        # modeling_internlm.py builds k/v with num_attention_heads heads whatever the config says
        self.num_key_value_heads = self.num_attention_heads
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
