"""tp=2 across two processes started by msrun, every family in one launch (tp_matrix.py): logits equal the
single-process model's and HF's, each rank reads only its slices of the sharded tensors, greedy decoding matches
and gradients are the slices of the single-process ones.

Rows: the HF-native families whose transformers config has a `base_model_tp_plan`, each on the smallest shapes
(hidden 64, 2 layers, 4 heads / 2 KV heads; gpt-oss's plan is HF's only for the head, ours splits its attention and
experts too), and the remote formats written by tests/models/remote_conversions.py
(renaming tables, fused qkv and gate_up, a permuted wqkv, ALiBi slopes per head rank). GPT-2 has no HF plan:
its row checks the layout we declare (Conv1D weights, transposed). Qwen2-VL and Qwen2.5-VL load through
AutoModelForImageTextToText on a batch with images (their vision tower is replicated); Qwen-VL (v1) and CogVLM2,
remote formats with no transformers class, against the torch references of their parity tests (the plan is the
family's own declaration; vision towers replicated). The launch runs once per session."""
import numpy as np
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.test_gpt_oss_parity import GPT_OSS, _randomize as randomize_expert_biases
from tests.parallel.tp_matrix import check_tp_row, run_tp_matrix

_MOE = dict(num_experts_per_tok=2, moe_intermediate_size=32)
# multi-head latent attention: q through a LoRA rank, v_head_dim != the q/k head size; a dense first layer
_MLA = dict(num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=16,
            v_head_dim=12, n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=1, **_MOE)
_GEMMA2 = dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=4, attn_logit_softcapping=1.5,
               final_logit_softcapping=2.0)
_GEMMA3 = dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
               layer_types=["sliding_attention", "full_attention"],
               rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                                "full_attention": {"rope_type": "default", "rope_theta": 10000.0}})
# family: (config class, model class, overrides, plan); vocab 128, hidden 64, 2 layers, 4 heads, 2 KV heads
HF_ROWS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, "auto"),
    # tied embeddings, so the vocab-parallel embedding also serves as the parallel LM head
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}, "auto+vocab"),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}, "auto"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}, "auto"),  # per-head q/k norms: replicated
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}, "auto"),  # fused qkv_proj and gate_up_proj, split per block
    "glm": ("GlmConfig", "GlmForCausalLM", {"head_dim": 16}, "auto"),  # fused gate_up_proj, partial rotary
    "glm4": ("Glm4Config", "Glm4ForCausalLM", {"head_dim": 16}, "auto"),
    # Gemma ties the head to the scaled embedding: vocab-parallel for both
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 16, "tie_word_embeddings": True}, "auto+vocab"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(_GEMMA2, tie_word_embeddings=True), "auto+vocab"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", _GEMMA3, "auto"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2), "auto"),
    # experts stacked at load (per-expert keys in the file), gated shared expert, one dense layer
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(_MOE, num_experts=4, shared_expert_intermediate_size=48, norm_topk_prob=True,
                       mlp_only_layers=[0]), "auto"),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(_MOE, num_experts=4, norm_topk_prob=True,
                                                                head_dim=16), "auto"),
    "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM", _MLA, "auto"),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(_MLA, n_group=2, topk_group=1), "auto"),
    # LayerNorms, biases, a plain c_fc / c_proj MLP, a sliding window
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", {"sliding_window": 4}, "auto"),
    # fc1 / fc2, the output projection `dense`, parallel residual, partial rotary, an LM head bias (sliced per rank)
    "phi": ("PhiConfig", "PhiForCausalLM", {}, "auto"),
    # q/k norms over the whole projection: weight split with the heads, the sum of squares all-reduced
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}, "auto"),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {"no_rope_layers": [1, 0]}, "auto"),  # a NoPE layer
    # sinks split per head, router replicated, stacked experts with biases split by width (biases randomised)
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", GPT_OSS, "auto"),
}


# transformers has no tp plan for GPT-2: ours, as a dict plan (the modules' declarations give the q/k/v blocks of
# the fused Conv1D c_attn, stored [in, out]), with the tied wte vocab-parallel as embedding and head
GPT2_PLAN = {"transformer.wte": "embedding_rowwise", "transformer.h.*.attn.c_attn": "colwise",
             "transformer.h.*.attn.c_proj": "rowwise", "transformer.h.*.mlp.c_fc": "colwise",
             "transformer.h.*.mlp.c_proj": "rowwise"}
HF_ROWS["gpt2"] = ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                                          n_inner=96, tie_word_embeddings=True), GPT2_PLAN)


def _hf_row(root, name):
    config, cls, overrides, plan = HF_ROWS[name]
    folder = make_hf_checkpoint(root / name, config, cls, **overrides)
    if name == "gpt_oss":
        randomize_expert_biases(folder)
    return folder, folder, plan


def _remote_row(root, name):
    """The remote-format folder, with its HF-native twin as the oracle (tests/models/remote_conversions.py)."""
    from tests.models import remote_conversions as remote

    folder, hf_folder = remote.WRITERS[name](root / name)
    heads = remote.alibi_heads(folder)
    if heads is None:
        return folder, hf_folder, "auto"

    def alibi_logits(ids, mask):  # the twin runs ALiBi as its attention mask
        import torch
        import transformers

        hf = transformers.AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32,
                                                               attn_implementation="eager").eval()
        with torch.no_grad():
            return remote.alibi_reference(hf, heads)(input_ids=torch.as_tensor(np.asarray(ids)),
                                                     attention_mask=torch.as_tensor(np.asarray(mask))).logits.numpy()
    return folder, alibi_logits, "auto"


def _vl_row(root, name):
    """Qwen2-VL / Qwen2.5-VL (tests/models/qwen2_vl_fixtures.py: hidden 32, 4 heads, 2 KV heads, untied head) through
    AutoModelForImageTextToText: the language model's LLaMA layers and the head split as transformers' plans say,
    the vision tower replicated. The batch has images (the fixtures' image_batch: two images in the first row, the
    second row text only and left-padded), so M-RoPE's grid positions, the replicated tower's features and its
    gradients (back through the split language model) are all checked."""
    from tests.models.qwen2_vl_fixtures import image_batch, make_qwen2_vl_checkpoint

    folder = make_qwen2_vl_checkpoint(root / name, name)

    def hf_logits(ids, mask, **extras):
        import torch
        import transformers

        hf = transformers.AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            return hf(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                      **{k: torch.as_tensor(v) for k, v in extras.items()}).logits.numpy()
    return folder, hf_logits, "auto", "AutoModelForImageTextToText", image_batch()


def _qwen_vl_row(root):
    """Qwen-VL (v1; tests/models/qwen_vl_fixtures.py: hidden 256, 4 heads, 256 queries an image) through
    AutoModelForCausalLM: Qwen v1's layers (fused c_attn, half-width MLP) and the head split as the qwen row, the
    vision tower replicated. No transformers class: the oracle is the fixtures' torch reference (the published
    visual.py in torch + transformers' Qwen2). The batch: one image in the first row, the second row text only and
    left-padded."""
    from tests.models.qwen_vl_fixtures import image_prompt, qwen_vl_checkpoint, reference_logits

    folder, _, visual, hf = qwen_vl_checkpoint(root / "qwen_vl")
    ids, _, pixels = image_prompt()
    text = np.random.default_rng(1).integers(3, 256, 7)
    ids = np.stack([ids[0], np.concatenate([np.zeros(ids.shape[1] - 7, np.int64), text])])
    mask = (np.arange(ids.shape[1]) >= np.array([[0], [ids.shape[1] - 7]])).astype(np.int64)
    batch = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels[:1])
    return folder, lambda i, m, **x: reference_logits(visual, hf, i, m, x["pixel_values"])[1], "auto", \
        "AutoModelForCausalLM", batch


def _cogvlm2_row(root):
    """CogVLM2 (tests/models/test_cogvlm2_parity.py: hidden 32, 4 heads, 2 KV heads): both experts' fused qkv and
    dense projections and both experts' MLPs split, the head split; embedding and EVA2-CLIP tower replicated. The
    oracle is that test's torch reference of the published code; the batch is its image prompt (an image in the
    first row, the second text only and left-padded) with token types."""
    from tests.models.test_cogvlm2_parity import image_prompt, reference_from, torch_logits, write_checkpoint

    folder, _ = write_checkpoint(root / "cogvlm2")
    ids, types, mask, images = image_prompt()
    ref = reference_from(folder)
    batch = dict(input_ids=ids, attention_mask=mask, token_type_ids=types, images=images)
    return folder, lambda i, m, **x: torch_logits(ref, i, x["token_type_ids"], m, x["images"]), "auto", \
        "AutoModelForCausalLM", batch


VL_ROWS = ("qwen2_vl", "qwen2_5_vl")
REMOTE_VL_ROWS = {"qwen_vl": _qwen_vl_row, "cogvlm2": _cogvlm2_row}
# InternLM v1, Baichuan (W_pack, NormHead) and Qwen v1 (c_attn) have no GQA: 4 KV heads
REMOTE_ROWS = ("chatglm", "internlm", "internlm2", "baichuan", "baichuan_alibi", "qwen")
ROWS = sorted(HF_ROWS) + list(REMOTE_ROWS) + list(VL_ROWS) + list(REMOTE_VL_ROWS)


@pytest.fixture(scope="module")
def tp_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_matrix")
    rows = {name: _hf_row(root, name) for name in HF_ROWS}
    # a row that fails in the workers (a style no registry has), between others that must still run
    rows["refused_style"] = (rows["llama"][0], rows["llama"][1], {"model.norm": "sequence_parallel"})
    rows.update({name: _remote_row(root, name) for name in REMOTE_ROWS})
    rows.update({name: _vl_row(root, name) for name in VL_ROWS})
    rows.update({name: make(root) for name, make in REMOTE_VL_ROWS.items()})
    return run_tp_matrix(rows, root / "out")


def test_a_row_failing_in_the_workers_fails_alone(tp_results):
    result = tp_results["refused_style"]
    assert "NotImplementedError" in result["error"] and "sequence_parallel" in result["error"]
    with pytest.raises(pytest.fail.Exception, match="'refused_style' failed in the workers"):
        check_tp_row(result)
    print(f"one msrun launch, {len(tp_results)} rows: {result['launch_seconds']:.1f} s")


@pytest.mark.parametrize("family", ROWS)
def test_tp2_matches_single_process_and_hf(tp_results, family):
    check_tp_row(tp_results[family])
