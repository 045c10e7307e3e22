"""DeepSeek-V2 and DeepSeek-V3: multi-head latent attention (modeling_deepseek_v2.py) on LLaMA's decoder, with
Mixtral's sparse MLP (dense in the first `first_k_dense_replace` layers, shared experts, group-limited routing)."""
from ..family import MOE_MLP, DecoderVariant, Family, MoeVariant, family_package

_MLA = DecoderVariant(attention="mindformers_hf.models.deepseek_v2.modeling_deepseek_v2:DeepseekV2Attention",
                      mlp=MOE_MLP)
FAMILIES = (  # (transformers has no DeepseekV2ForTokenClassification)
    Family("deepseek_v2", "DeepseekV2", _MLA, module=".modeling_deepseek_v2", heads=("ForSequenceClassification",),
           moe=MoeVariant(norm_topk_prob=False, router_fp32=True, shared_expert="shared_experts",
                          sparse_layers="first_k_dense", aux_loss=False)),
    Family("deepseek_v3", "DeepseekV3", _MLA, module=".modeling_deepseek_v2",
           moe=MoeVariant(scoring="sigmoid", topk_method="noaux_tc", correction_bias=True, router_fp32=True,
                          shared_expert="shared_experts", sparse_layers="first_k_dense", aux_loss=False)),
)
__all__, __getattr__, __dir__ = family_package(globals(), *FAMILIES)
