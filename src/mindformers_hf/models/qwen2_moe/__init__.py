"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B) and Qwen3-MoE: LLaMA attention with Mixtral's sparse MLP.

Qwen2-MoE: q/k/v biases (config.qkv_bias), a softmax router with `norm_topk_prob`, a shared expert scaled by
its own sigmoid gate, and dense MLPs in `mlp_only_layers` and off the `decoder_sparse_step` grid. Qwen3-MoE:
RMSNorm on q and k per head, no shared expert.
"""
from ..family import MOE_MLP, DecoderVariant, Family, MoeVariant, family_package

FAMILIES = (
    Family("qwen2_moe", "Qwen2Moe", DecoderVariant(o_bias=False, mlp=MOE_MLP), parent="mixtral",  # qkv: config.qkv_bias
           moe=MoeVariant(shared_expert="shared_expert", sparse_layers="sparse_step")),
    Family("qwen3_moe", "Qwen3Moe", DecoderVariant(qk_norm=True, mlp=MOE_MLP), parent="mixtral",
           moe=MoeVariant(sparse_layers="sparse_step")),
)
__all__, __getattr__, __dir__ = family_package(globals(), *FAMILIES)
