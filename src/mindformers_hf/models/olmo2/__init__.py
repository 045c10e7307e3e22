"""OLMo 2: LLaMA without the pre-norms -- each sublayer's output is RMSNormed before the residual add
(post_attention_layernorm, post_feedforward_layernorm) -- and with RMSNorms on the whole query and key
projections (q_norm over H * head_dim, k_norm over KV * head_dim), before the head split and rotary."""
from ..family import DecoderVariant, Family, family_package

OLMO2_NORMS = (None, "post_attention_layernorm", None, "post_feedforward_layernorm")
FAMILY = Family("olmo2", "Olmo2", DecoderVariant(qk_norm=True, qk_norm_whole=True, sandwich_norm=True,
                                                 norm_names=OLMO2_NORMS),
                heads=("ForSequenceClassification",))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
