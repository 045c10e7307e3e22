"""CogVLM2 image chat (THUDM/cogvlm2-llama3-chat-19B, `CogVLMForCausalLM`), a remote-code format read natively: a
LLaMA-3 decoder whose every layer has a visual expert (token_type_ids route each token through the vision or the
language copy of q/k/v, the attention output projection and the MLP), fed by an EVA2-CLIP vision tower
(modeling_cogvlm2.py). No transformers class exists for it; the published modeling_cogvlm.py / visual.py never run."""
from ..family import Family, family_package

FAMILY = Family("cogvlm2", "CogVLM2", module=".modeling_cogvlm2", causal_lm="ForCausalLM", heads=(),
                config=".configuration_cogvlm2:CogVLM2Config", architectures=("CogVLMForCausalLM",),
                exports={"build_position_ids": ".modeling_cogvlm2", "CogVLM2ImageProcessor": ".processing_cogvlm2"})
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
