"""Qwen (v1: Qwen-1.8B/7B/14B/72B and their Chat models, `model_type` "qwen", `QWenLMHeadModel`): the field
names and defaults of the repos' configuration_qwen.py, read without running it. Tensor-free.

`intermediate_size` is Qwen's: twice the width of each of w1 and w2. The earliest Qwen-7B configs used
GPT-2 names (n_embd, n_head, n_layer, n_positions, ffn_hidden_size, padded_vocab_size); they are read
into the later names."""
from transformers import PretrainedConfig

_EARLY_NAMES = {"n_embd": "hidden_size", "n_head": "num_attention_heads", "n_layer": "num_hidden_layers",
                "n_positions": "max_position_embeddings", "ffn_hidden_size": "intermediate_size"}


class QWenConfig(PretrainedConfig):
    model_type = "qwen"
    attribute_map = {
        "rms_norm_eps": "layer_norm_epsilon",
        "head_dim": "kv_channels",
        "rope_theta": "rotary_emb_base",
        "partial_rotary_factor": "rotary_pct",
    }

    vocab_size: int = 151936
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    emb_dropout_prob: float = 0.0
    attn_dropout_prob: float = 0.0
    layer_norm_epsilon: float = 1e-6
    initializer_range: float = 0.02
    max_position_embeddings: int = 8192
    scale_attn_weights: bool = True
    use_cache: bool = True
    bf16: bool = False
    fp16: bool = False
    fp32: bool = False
    kv_channels: int = 128
    rotary_pct: float = 1.0
    rotary_emb_base: float = 10000.0
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    use_flash_attn: object = "auto"
    intermediate_size: int = 22016
    no_bias: bool = True
    tie_word_embeddings: bool = False
    use_cache_quantization: bool = False
    use_cache_kernel: bool = False
    softmax_in_fp32: bool = False
    seq_length: int = 8192
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        for early, name in _EARLY_NAMES.items():
            if early in kwargs:
                setattr(self, name, kwargs.pop(early))
        kwargs.pop("padded_vocab_size", None)  # the same number as vocab_size in those configs
        if kwargs.get("apply_residual_connection_post_layernorm"):
            raise NotImplementedError("Qwen with apply_residual_connection_post_layernorm=True is not supported")
        if self.use_cache_quantization:
            raise NotImplementedError("Qwen with use_cache_quantization=True (int8 KV cache) is not supported")
        if self.kv_channels * self.num_attention_heads != self.hidden_size:
            raise ValueError(f"Qwen needs kv_channels * num_attention_heads == hidden_size, got {self.kv_channels} "
                             f"* {self.num_attention_heads} != {self.hidden_size}")
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)

    @property
    def num_key_value_heads(self):
        return self.num_attention_heads

    @property
    def attention_bias(self):  # c_proj (and the MLP) carry a bias unless no_bias; c_attn always does
        return not self.no_bias

    @property
    def mlp_bias(self):
        return not self.no_bias

    @property
    def hidden_act(self):
        return "silu"
