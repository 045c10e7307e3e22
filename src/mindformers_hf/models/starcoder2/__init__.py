"""StarCoder2: LLaMA with LayerNorms (weight and bias, eps `norm_epsilon`), a plain GELU MLP `c_fc` / `c_proj`,
biases on every projection when `use_bias` (the default), and a sliding window over every layer when the config
sets `sliding_window`."""
from ..family import DecoderVariant, Family, family_package

FAMILY = Family("starcoder2", "Starcoder2", DecoderVariant(
    qkv_bias="use_bias", o_bias="use_bias", mlp_bias="use_bias", layer_norm=True, eps="norm_epsilon",
    mlp_names=(None, "c_fc", "c_proj")))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
