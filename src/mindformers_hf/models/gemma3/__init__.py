"""Gemma 3 text (`Gemma3ForCausalLM`, model_type gemma3_text): Gemma 2 plus q/k norms with Gemma's (1 + weight)
over head_dim, and rotary tables per layer type (`rope_parameters` keyed by "sliding_attention", with
rope_local_base_freq, and "full_attention"); five sliding layers per global one by default."""
from ..family import DecoderVariant, Family, family_package
from ..gemma2 import GEMMA2_NORMS

FAMILY = Family("gemma3_text", "Gemma3", DecoderVariant(norm_offset=True, embed_scale=True, sandwich_norm=True,
                                                        norm_names=GEMMA2_NORMS, activation="hidden_activation",
                                                        qk_norm=True, attn_softcap=False),
                heads=("ForSequenceClassification",), text_prefix="Gemma3Text")
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
