"""DeepSeek-V2 / V3 parity against HF transformers (torch, fp32, CPU) on tiny random HF checkpoints.

Multi-head latent attention (with and without a q LoRA rank, v_head_dim below and above the q/k head size,
yarn rope with mscale), dense first layers, shared experts, group-limited routing, routed_scaling_factor,
and DeepSeek-V3's sigmoid router with its score-correction bias.
"""
import numpy as np

from mindformers_hf import AutoModelForCausalLM
from tests.conftest import batch, make_hf_checkpoint
from tests.models.family_parity import hf_call, hf_model

MLA = dict(num_hidden_layers=3, num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8,
           qk_nope_head_dim=16, v_head_dim=12, moe_intermediate_size=32, n_shared_experts=2, first_k_dense_replace=1)
DEEPSEEK_V2 = dict(MLA, n_routed_experts=8, num_experts_per_tok=3, topk_method="group_limited_greedy", n_group=4,
                   topk_group=2, routed_scaling_factor=2.0)


def _logits_match(folder, ours=None):
    ids, mask = batch(pad_left=(0, 3))
    ours = ours or AutoModelForCausalLM.from_pretrained(folder)
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = hf_call(hf_model(folder), ids, mask).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(got - want)[valid].max() <= 1e-4
    assert (got.argmax(-1)[valid] == want.argmax(-1)[valid]).all()
    return ours


def no_aux_loss_check(ours, folder, hf_folder):
    """HF's DeepSeek-V2 returns router logits but adds no auxiliary loss: neither do we (the family matrix's extra
    forward check, tests/models/matrix.py)."""
    import torch

    dense = ours.config.first_k_dense_replace
    assert [type(layer.mlp).__name__ for layer in ours.model.layers] == (
        ["LlamaMLP"] * dense + ["MixtralSparseMoeBlock"] * (ours.config.num_hidden_layers - dense))

    ids, mask = batch(pad_left=(0, 0), seed=3)
    labels = ids.copy()
    got = ours(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    with torch.no_grad():
        want = hf_model(folder)(input_ids=torch.tensor(ids), labels=torch.tensor(labels), output_router_logits=True)
    assert got.aux_loss is None and want.aux_loss is None
    assert abs(float(got.loss) - float(want.loss)) <= 1e-5 * abs(float(want.loss))
    assert len(got.router_logits) == len(want.router_logits) == ours.config.num_hidden_layers - dense
    for g, w in zip(got.router_logits, want.router_logits):
        assert np.abs(np.asarray(g) - w.numpy()).max() <= 1e-4


def test_deepseek_v2_no_q_lora_greedy_yarn_wide_v(tmp_path):
    """q_lora_rank=None (plain q_proj), greedy top-k, yarn rope with mscale (softmax scale changes too), and a
    v_head_dim wider than the q/k head."""
    config = dict(DEEPSEEK_V2, q_lora_rank=None, topk_method="greedy", v_head_dim=32, max_position_embeddings=64,
                  rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                                   "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1,
                                   "rope_theta": 10000.0})
    folder = make_hf_checkpoint(tmp_path / "hf", "DeepseekV2Config", "DeepseekV2ForCausalLM", **config)
    ours = _logits_match(folder)
    assert not hasattr(ours.model.layers[0].self_attn, "q_a_proj")
    assert ours.model.layers[0].self_attn.scaling != (16 + 8) ** -0.5


def _random_correction_bias(folder):
    """HF initialises V3's e_score_correction_bias to zeros; a random one makes the test see whether it is used
    for choosing experts (and not for weighting them)."""
    import torch

    model = hf_model(folder)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(0.05 * torch.randn_like(buf))
    model.save_pretrained(folder)


def deepseek_v3_checkpoint(folder, **kwargs):
    """A DeepSeek-V3 checkpoint HF wrote, with a random score-correction bias (the family matrix's writer)."""
    folder = make_hf_checkpoint(folder, "DeepseekV3Config", "DeepseekV3ForCausalLM", **kwargs)
    _random_correction_bias(folder)
    return folder


def test_deepseek_v3_half_split_rope(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "hf", "DeepseekV3Config", "DeepseekV3ForCausalLM", n_routed_experts=8,
                                num_experts_per_tok=2, n_group=1, topk_group=1, rope_interleave=False, **MLA)
    _random_correction_bias(folder)
    _logits_match(folder)
