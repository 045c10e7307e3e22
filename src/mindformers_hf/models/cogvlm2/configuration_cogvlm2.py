"""CogVLM2 config (`CogVLMForCausalLM` of THUDM/cogvlm2-llama3-chat-19B): the field names and defaults of the repo's
configuration_cogvlm.py, read without running it. Tensor-free (no MindSpore).

The published class sets no model_type (its config.json is recognised by the architecture, models/families.py);
ours is "cogvlm2". `vision_config` stays the plain dict the published code reads (`config.vision_config['image_size']`).
The rotary base (500000) is not a field: the published attention fixes it (`FastRotaryEmbedding(base=500000)`).
"""
from transformers import PretrainedConfig

# the published defaults of THUDM/cogvlm2-llama3-chat-19B's config.json vision_config (EVA2-CLIP-E, 1344 px)
DEFAULT_VISION_CONFIG = {"dropout_prob": 0.0, "hidden_act": "gelu", "in_channels": 3, "num_hidden_layers": 63,
                         "hidden_size": 1792, "patch_size": 14, "num_heads": 16, "intermediate_size": 15360,
                         "layer_norm_eps": 1e-6, "num_positions": 9217, "image_size": 1344}
ROPE_THETA = 500000.0


class CogVLM2Config(PretrainedConfig):
    model_type = "cogvlm2"
    # the LLaMA pieces (cache, MLP) read LLaMA's name for the KV heads
    attribute_map = {"num_key_value_heads": "num_multi_query_heads"}

    vocab_size: int = 128256
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_multi_query_heads: int = 8
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    template_version: str = "chat"
    vision_config: dict | None = None
    use_cache: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = 128000
    eos_token_id: int | list[int] | None = 128001

    def __post_init__(self, **kwargs):
        kwargs.pop("model_type", None)  # the published config.json's (empty) one
        self.vision_config = dict(DEFAULT_VISION_CONFIG if self.vision_config is None else self.vision_config)
        if self.template_version not in ("base", "chat", "vqa"):
            raise ValueError(f"template_version must be 'base', 'chat' or 'vqa', got {self.template_version!r}")
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        if isinstance(config_dict, dict) and "num_multi_query_heads" not in config_dict \
                and "vision_config" in config_dict:
            raise NotImplementedError(
                "CogVLM (v1, e.g. THUDM/cogvlm-chat-hf: no grouped KV heads, no 2x2 downsampling conv) is not "
                "supported; only CogVLM2 image checkpoints (num_multi_query_heads in config.json) are")
        return super().from_dict(config_dict, **kwargs)
