"""Train and LoRA for every text family (the cells tests/models/matrix_train.py defines), on tiny checkpoints."""
import pytest

from tests.models import remote_conversions as conv
from tests.models.remote_conversions import TINY
from tests.models.matrix_train import check_lora, check_train

MOE = dict(router_aux_loss_coef=0.02, output_router_logits=True)  # the aux loss is part of the trained loss
MLA = dict(num_key_value_heads=4, kv_lora_rank=8, q_lora_rank=12, qk_rope_head_dim=4, qk_nope_head_dim=8,
           v_head_dim=6, moe_intermediate_size=16, n_shared_experts=1, first_k_dense_replace=1, n_routed_experts=4,
           num_experts_per_tok=2, n_group=2, topk_group=1, **MOE)
GEMMA3 = dict(head_dim=8, query_pre_attn_scalar=12, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
              attn_logit_softcapping=1.5, final_logit_softcapping=2.0,
              rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                               "full_attention": {"rope_type": "default", "rope_theta": 10000.0}})

NATIVE = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=4)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=8)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    "glm": ("GlmConfig", "GlmForCausalLM", dict(head_dim=8)),
    "glm4": ("Glm4Config", "Glm4ForCausalLM", dict(head_dim=8)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(head_dim=8, tie_word_embeddings=True)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=8, tie_word_embeddings=True, query_pre_attn_scalar=12,
                                                         sliding_window=4, attn_logit_softcapping=1.5,
                                                         final_logit_softcapping=2.0)),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", GEMMA3),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                   bos_token_id=1, eos_token_id=2, resid_pdrop=0.0,
                                                   embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2, **MOE)),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", dict(num_experts=4, num_experts_per_tok=2,
                                                                moe_intermediate_size=16,
                                                                shared_expert_intermediate_size=24, **MOE)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(num_experts=4, num_experts_per_tok=2, head_dim=8,
                                                                moe_intermediate_size=16, **MOE)),
    "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM", dict(topk_method="group_limited_greedy",
                                                                      routed_scaling_factor=2.0, **MLA)),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(routed_scaling_factor=2.5, norm_topk_prob=True,
                                                                      **MLA)),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(sliding_window=4, hidden_act="gelu_pytorch_tanh",
                                                                     residual_dropout=0.0, embedding_dropout=0.0)),
    "phi": ("PhiConfig", "PhiForCausalLM", dict(resid_pdrop=0.0, embd_pdrop=0.0)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", dict(no_rope_layers=[1, 0])),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", dict(head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                                                          sliding_window=4, swiglu_limit=7.0, **MOE)),
}
REMOTE = sorted(conv.WRITERS)  # (baichuan_alibi: Baichuan2-13B's ALiBi)



def make_checkpoint(folder, config_class, model_class, seed=0, **overrides):
    """transformers' own save_pretrained of a random model, with random norms and biases (not ones and zeros)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    base = {} if config_class == "GPT2Config" else TINY
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**{**base, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias") or name.endswith("e_score_correction_bias"):
                p.copy_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn_like(b))
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=sorted(NATIVE) + REMOTE)
def family(request, tmp_path_factory):
    """(our folder, HF folder) of one family."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param in NATIVE:
        path = make_checkpoint(folder / "hf", *NATIVE[request.param][:2], **NATIVE[request.param][2])
        return path, path
    return conv.WRITERS[request.param](folder)


def test_train(family, tmp_path):
    check_train(*family, tmp_path)


def test_lora(family, tmp_path):
    check_lora(*family, tmp_path)
