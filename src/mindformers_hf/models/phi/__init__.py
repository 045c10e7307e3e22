"""Phi-1 / Phi-1.5 / Phi-2 (model_type phi): attention and MLP side by side on one LayerNorm
(x + attn(ln(x)) + mlp(ln(x))), biases everywhere, a plain GELU MLP fc1 / fc2, the output projection named
`dense`, rotary on part of each head (`partial_rotary_factor`), `final_layernorm` and an LM head with a bias.
`qk_layernorm` (off in every published Phi checkpoint) raises."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("phi", "Phi", DecoderVariant(
    qkv_bias=True, o_bias=True, mlp_bias=True, layer_norm=True, eps="layer_norm_eps", mlp_names=(None, "fc1", "fc2"),
    o_name="dense", parallel_residual=True, final_norm="final_layernorm", lm_head_bias=True))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
