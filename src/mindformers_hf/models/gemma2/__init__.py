"""Gemma 2: Gemma plus a norm on each sublayer's output before the residual add (four norms a layer:
input_layernorm, post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm), attention
scaled by query_pre_attn_scalar ** -0.5 with logit soft-capping, final logit soft-capping, and sliding-window
layers alternating with global ones (`layer_types`); the MLP activation is named by hidden_activation."""
from ..family import DecoderVariant, Family, family_package

GEMMA2_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                "post_feedforward_layernorm")
FAMILY = Family("gemma2", "Gemma2", DecoderVariant(norm_offset=True, embed_scale=True, sandwich_norm=True,
                                                   norm_names=GEMMA2_NORMS, activation="hidden_activation"))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
