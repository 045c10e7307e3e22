"""ChatGLM2 / ChatGLM3 / GLM-4 (non-hf) config (`model_type` "chatglm", `ChatGLMModel`): the field names and
defaults of the repos' configuration_chatglm.py, read without running it. Tensor-free (no MindSpore).

The LLaMA classes read LLaMA's names; `attribute_map` and the properties below answer them from ChatGLM's
fields, as transformers' convert_glm_weights_to_hf.py maps them onto GlmConfig (rope_theta = 10000 *
rope_ratio, rotary on half of each head)."""
from transformers import PretrainedConfig


class ChatGLMConfig(PretrainedConfig):
    model_type = "chatglm"
    attribute_map = {
        "num_hidden_layers": "num_layers",
        "vocab_size": "padded_vocab_size",
        "intermediate_size": "ffn_hidden_size",
        "head_dim": "kv_channels",
        "rms_norm_eps": "layernorm_epsilon",
        "max_position_embeddings": "seq_length",
        "qkv_bias": "add_qkv_bias",          # query_key_value's bias
        "attention_bias": "add_bias_linear",  # dense (o_proj)
        "mlp_bias": "add_bias_linear",        # dense_h_to_4h, dense_4h_to_h
    }

    num_layers: int = 28
    padded_vocab_size: int = 65024
    hidden_size: int = 4096
    ffn_hidden_size: int = 13696
    kv_channels: int = 128
    num_attention_heads: int = 32
    seq_length: int = 2048
    hidden_dropout: float = 0.0
    classifier_dropout: float | None = None
    attention_dropout: float = 0.0
    layernorm_epsilon: float = 1e-5
    rmsnorm: bool = True
    apply_residual_connection_post_layernorm: bool = False
    post_layer_norm: bool = True
    add_bias_linear: bool = False
    add_qkv_bias: bool = False
    bias_dropout_fusion: bool = True
    multi_query_attention: bool = False
    multi_query_group_num: int = 1
    rope_ratio: float = 1.0
    apply_query_key_layer_scaling: bool = True
    attention_softmax_in_fp32: bool = True
    fp32_residual_connection: bool = False
    quantization_bit: int = 0
    pre_seq_len: int | None = None
    prefix_projection: bool = False
    original_rope: bool = True
    use_cache: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = 2

    def __post_init__(self, **kwargs):
        if "position_encoding_2d" in kwargs or "inner_hidden_size" in kwargs:
            raise NotImplementedError(
                "ChatGLM-6B (the first generation: 2D positions, GELU MLP, post-LayerNorm) is not supported; "
                "ChatGLM2-6B, ChatGLM3-6B and GLM-4-9B-chat (model_type 'chatglm') are")
        unsupported = {
            "rmsnorm=False (LayerNorm)": not self.rmsnorm,
            "apply_residual_connection_post_layernorm=True": self.apply_residual_connection_post_layernorm,
            "post_layer_norm=False": not self.post_layer_norm,
            f"quantization_bit={self.quantization_bit} (int4/int8 weights)": self.quantization_bit,
            f"pre_seq_len={self.pre_seq_len} (P-tuning v2 prefix encoder)": self.pre_seq_len,
        }
        for feature, present in unsupported.items():
            if present:
                raise NotImplementedError(f"ChatGLM with {feature} is not supported")
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)

    @property
    def num_key_value_heads(self):
        return self.multi_query_group_num if self.multi_query_attention else self.num_attention_heads

    @property
    def rope_theta(self):
        return 10000.0 * self.rope_ratio

    @property
    def partial_rotary_factor(self):  # RotaryEmbedding(kv_channels // 2): the first half of each head
        return 0.5

    @property
    def hidden_act(self):
        return "silu"  # swiglu over the two halves of dense_h_to_4h

    @property
    def initializer_range(self):
        return 0.02  # not a ChatGLM field; only used to draw weights of a model built from scratch
