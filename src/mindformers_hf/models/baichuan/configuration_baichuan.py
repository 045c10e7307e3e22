"""Baichuan / Baichuan2 config (`model_type` "baichuan"; `BaichuanForCausalLM`, `BaiChuanForCausalLM`): the
field names and defaults of the repos' configuration_baichuan.py, read without running it. Tensor-free.

Two things the repos decide by which modeling file they ship, not by a config field, are resolved here
as vLLM resolves them and stored, so a saved config.json says them explicitly:
- `position_embedding`: "rope" (7B models, hidden_size 4096, and `BaiChuanForCausalLM`) or "alibi"
  (13B models: ALiBi biases, no rotary);
- `norm_head`: Baichuan2 (vocab_size 125696) L2-normalises each lm_head row at use; Baichuan 1 does not.
"""
from transformers import PretrainedConfig

BAICHUAN2_VOCAB_SIZE = 125696


class BaichuanConfig(PretrainedConfig):
    model_type = "baichuan"

    vocab_size: int = 64000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    hidden_act: str = "silu"
    max_position_embeddings: int | None = None  # 7B configs; the 13B ones name only model_max_length
    model_max_length: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    z_loss_weight: float = 0.0
    position_embedding: str | None = None  # ours (see above): "rope" | "alibi"
    norm_head: bool | None = None          # ours (see above)

    def __post_init__(self, **kwargs):
        architectures = self.architectures or []
        if self.position_embedding is None:
            rope = self.hidden_size == 4096 or "BaiChuanForCausalLM" in architectures
            self.position_embedding = "rope" if rope else "alibi"
        if self.position_embedding not in ("rope", "alibi"):
            raise ValueError(f"Baichuan position_embedding must be 'rope' or 'alibi', not {self.position_embedding!r}")
        if self.norm_head is None:
            self.norm_head = self.vocab_size == BAICHUAN2_VOCAB_SIZE
        if self.max_position_embeddings is None:
            self.max_position_embeddings = self.model_max_length
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)

    @property
    def num_key_value_heads(self):  # W_pack holds as many k and v heads as q heads
        return self.num_attention_heads
