"""Qwen2-MoE and Qwen3-MoE parity against HF transformers (torch, fp32, CPU) on tiny random HF checkpoints."""
import numpy as np

from mindformers_hf import AutoModelForCausalLM
from tests.conftest import batch, make_hf_checkpoint
from tests.models.family_parity import hf_call, hf_model
from tests.models.test_mixtral_parity import assert_router_loss_parity

QWEN2_MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                 router_aux_loss_coef=0.02)


def test_qwen2_moe_sparse_step_unnormed_no_qkv_bias(tmp_path):
    """decoder_sparse_step=2 (odd layers sparse), norm_topk_prob=False, qkv_bias=False: logits and router loss."""
    folder = make_hf_checkpoint(tmp_path / "hf", "Qwen2MoeConfig", "Qwen2MoeForCausalLM", num_hidden_layers=3,
                                decoder_sparse_step=2, norm_topk_prob=False, qkv_bias=False, **QWEN2_MOE)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    assert [type(layer.mlp).__name__ for layer in ours.model.layers] == [
        "LlamaMLP", "MixtralSparseMoeBlock", "LlamaMLP"]
    ids, mask = batch(pad_left=(0, 3))
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = hf_call(hf_model(folder), ids, mask).logits.numpy()
    assert np.abs(got - want)[mask.astype(bool)].max() <= 1e-4
    assert_router_loss_parity(folder, ours)
