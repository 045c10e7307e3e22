"""SmolLM3: LLaMA whose layers listed 0 in `no_rope_layers` use no rotary embedding at all (NoPE; every fourth
layer by default), with sliding-window layers when `use_sliding_window` (the config's `layer_types`)."""
from ..family import Family, family_package

FAMILY = Family("smollm3", "SmolLM3")
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
