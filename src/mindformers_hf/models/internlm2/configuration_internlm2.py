"""InternLM2 / InternLM2.5 config (`model_type` "internlm2", `InternLM2ForCausalLM`): the field names and
defaults of the repos' configuration_internlm2.py, read without running it. Tensor-free (no MindSpore)."""
from transformers import PretrainedConfig


class InternLMConfigFields(PretrainedConfig):
    """The fields and defaults InternLM v1's and InternLM2's configuration files share (one place for both)."""
    # the LLaMA classes read `attention_bias`; InternLM calls it `bias` (on q/k/v/o, InternLM2's wqkv and wo)
    attribute_map = {"attention_bias": "bias"}

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
    # v4 `rope_theta` / `rope_scaling` ({"type": "dynamic" | "linear", "factor": f}) land here
    rope_parameters: dict | None = None


class InternLM2Config(InternLMConfigFields):
    model_type = "internlm2"

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        kwargs.pop("attn_implementation", None)  # the repo's field; ours is from_pretrained(attn_implementation=)
        kwargs.pop("model_type", None)  # repos that kept "internlm" for InternLM2 weights are still InternLM2
        super().__post_init__(**kwargs)
