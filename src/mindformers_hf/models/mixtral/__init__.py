"""Mixtral, and the sparse-MoE MLP (modeling_mixtral.py) that every MoE family shares."""
from ..family import MOE_MLP, DecoderVariant, Family, MoeVariant, family_package

FAMILY = Family("mixtral", "Mixtral", DecoderVariant(mlp=MOE_MLP), module=".modeling_mixtral",
                moe=MoeVariant(checkpoint_block="block_sparse_moe", checkpoint_experts=("w1", "w3", "w2"),
                               expert_size="intermediate_size", norm_topk_prob=True))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
