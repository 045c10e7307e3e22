"""Checkpoint formats that on the Hub need trust_remote_code, loaded natively: InternLM (v1), InternLM2,
Baichuan2 7B (rotary) and 13B (ALiBi), ChatGLM2/3, Qwen v1.

Each test builds a random HF-native model with transformers (torch), writes the remote-format checkpoint
from it by applying the inverse of a published conversion to that HF-native architecture (cited at each
writer), loads the folder with our AutoModelForCausalLM (no trust_remote_code; no remote code exists in the
folder), and compares with the HF-native model run by transformers: logits at unpadded positions (fp32,
<= 1e-4), argmax, loss, cached greedy decoding, and that save_pretrained writes the format's own tensors
back bit for bit. Expected values always come from transformers, never from our code.
"""
import json
import os

import numpy as np
import pytest

from mindformers_hf import AutoConfig, AutoModelForCausalLM
from tests.conftest import TINY_LLAMA, batch
from tests.models.family_parity import LOGITS_ATOL, LOSS_RTOL, our_greedy
from tests.models import remote_conversions
from tests.models.remote_conversions import (auto_map as _auto_map, baichuan_config, baichuan_tensors, chatglm_config,
                                             chatglm_tensors, internlm2_config, internlm2_tensors, internlm_config,
                                             normalise_head, qwen_config, qwen_tensors, read_tensors, write_remote)

VOCAB = TINY_LLAMA["vocab_size"]


def hf_native(config_class, model_class, seed=0, **overrides):
    """A random HF-native model on TINY_LLAMA's shapes (random norms and biases, so a misplaced one cannot hide)."""
    return remote_conversions.hf_native(config_class, model_class, seed, base=TINY_LLAMA, **overrides)


def hf_forward(model, ids, mask=None, labels=None, **extra):
    import torch

    as_t = lambda a: None if a is None else torch.tensor(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        return model(input_ids=as_t(ids), attention_mask=as_t(mask), labels=as_t(labels), **extra)


def assert_remote_parity(folder, arrays, architecture, reference, save_to, skipped=()):
    """`reference(ids, mask, labels)` -> the HF-native model's output on the same weights."""
    ours = AutoModelForCausalLM.from_pretrained(folder)
    assert type(ours).__name__ == architecture

    ids, mask = batch(VOCAB, length=11, pad_left=(0, 3))
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = reference(ids, mask, None).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(got - want)[valid].max() <= LOGITS_ATOL
    assert (got.argmax(-1)[valid] == want.argmax(-1)[valid]).all()

    ids_r, mask_r = batch(VOCAB, length=11, pad_left=(0, 0), seed=1)
    mask_r[1, -4:] = 0
    labels = np.where(mask_r == 1, ids_r, -100)
    got_loss = float(ours(input_ids=ids_r, attention_mask=mask_r, labels=labels).loss)
    want_loss = float(reference(ids_r, mask_r, labels).loss)
    assert abs(got_loss - want_loss) <= LOSS_RTOL * abs(want_loss)

    # greedy decoding through our KV cache: every step's token and logits equal the reference's uncached
    # forward over the prompt plus the tokens chosen so far
    prompt = ids[:1]
    tokens, step_logits = our_greedy(ours, prompt, 4)
    full = np.concatenate([prompt, tokens], 1)
    want_steps = reference(full, np.ones_like(full), None).logits.numpy()[:, prompt.shape[1] - 1:-1]
    np.testing.assert_array_equal(tokens, want_steps.argmax(-1))
    assert np.abs(step_logits - want_steps).max() <= LOGITS_ATOL

    # save_pretrained writes the format back: its tensor names, its layouts, the same bits
    ours.save_pretrained(save_to)
    saved = read_tensors(save_to)
    assert set(saved) == set(arrays) - set(skipped)
    for name, array in saved.items():
        np.testing.assert_array_equal(array, arrays[name], err_msg=name)
    with open(os.path.join(save_to, "config.json")) as f:
        saved_config = json.load(f)
    assert saved_config["architectures"] == [architecture]
    with open(os.path.join(folder, "config.json")) as f:
        assert saved_config["auto_map"] == json.load(f)["auto_map"]
    np.testing.assert_array_equal(AutoModelForCausalLM.from_pretrained(save_to)(input_ids=ids, attention_mask=mask)
                                  .logits, got)
    return ours


def _hf_reference(model):
    return lambda ids, mask, labels: hf_forward(model, ids, mask, labels)


# ------------------------------------------------------------------------------------------------ InternLM2
def test_internlm2_matches_llama_conversion(tmp_path):
    """Reference: LLaMA (transformers) — InternLM's own tools/convert2llama.py (InternLM/InternLM) turns an
    InternLM2 checkpoint into LlamaForCausalLM by splitting `wqkv`, laid out per KV group as
    [q_per_kv query heads, 1 key head, 1 value head] x head_dim rows, and renaming the rest; `bias` becomes
    `attention_bias`. We apply its inverse."""
    folder, arrays, hf = internlm2_checkpoint(tmp_path / "internlm2")
    assert_remote_parity(folder, arrays, "InternLM2ForCausalLM", _hf_reference(hf), tmp_path / "ours")


def internlm2_checkpoint(folder):
    """An InternLM2-format folder of a random LLaMA model: (folder, arrays, the HF LLaMA model)."""
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", attention_bias=True, num_attention_heads=4,
                   num_key_value_heads=2, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                           "rope_theta": 1000000.0})
    folder, arrays = write_remote(folder, internlm2_config(hf), internlm2_tensors(hf))
    return folder, arrays, hf


# ------------------------------------------------------------------------------------------------ InternLM v1
def test_internlm_matches_llama_with_attention_bias(tmp_path):
    """Reference: LLaMA (transformers) with attention_bias=True — InternLM v1's modeling_internlm.py is
    LLaMA's with `bias=config.bias` on q/k/v/o and the same tensor names, so the conversion (as in
    InternLM's convert scripts) is the config field bias -> attention_bias only."""
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", attention_bias=True, num_key_value_heads=4,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    config = internlm_config(hf)
    folder, arrays = write_remote(tmp_path / "internlm", config, dict(hf.named_parameters()))
    assert_remote_parity(folder, arrays, "InternLMForCausalLM", _hf_reference(hf), tmp_path / "ours")


# ------------------------------------------------------------------------------------------------ Baichuan2
def _baichuan_checkpoint(hf, folder, position_embedding):
    """Baichuan2 tensors from a LLaMA model — the inverse of LLaMA-Factory's scripts/llamafy_baichuan2.py,
    which splits `W_pack` into q/k/v (rows q, k, v) and L2-normalises each lm_head row (NormHead). The head
    written here is the reference's normalised head times random positive row scales, which NormHead undoes."""
    head = normalise_head(hf)  # the reference (the llamafied model) holds the normalised head
    tensors = {**baichuan_tensors(hf), "lm_head.weight": head}
    config = baichuan_config(hf, position_embedding)
    return write_remote(folder, config, tensors)


def test_baichuan2_7b_matches_llama_conversion(tmp_path):
    """Reference: LLaMA (transformers) after llamafy_baichuan2's conversion (W_pack split, head normalised).
    Also Baichuan2's z-loss: its modeling file adds z_loss_weight * mean(max logit ** 2) over all shifted
    positions; the expected value is computed from the reference's logits."""
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=4)
    folder, arrays = _baichuan_checkpoint(hf, tmp_path / "baichuan2_7b", "rope")
    assert_remote_parity(folder, arrays, "BaichuanForCausalLM", _hf_reference(hf), tmp_path / "ours")

    ours = AutoModelForCausalLM.from_pretrained(folder, z_loss_weight=0.5)
    ids, mask = batch(VOCAB, length=9, pad_left=(0, 0), seed=2)
    labels = ids.copy()
    labels[0, :3] = -100
    ref = hf_forward(hf, ids, mask, labels)
    want = float(ref.loss) + 0.5 * float((ref.logits[:, :-1].max(-1).values ** 2).mean())
    got = float(ours(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert abs(got - want) <= LOSS_RTOL * abs(want)


def test_baichuan2_13b_alibi_matches_llama_with_bloom_alibi(tmp_path):
    """Reference: no HF-native architecture has ALiBi with RMSNorm and SwiGLU, so the reference is
    transformers' LlamaForCausalLM with rotary switched off (position_ids all 0: cos 1, sin 0) and ALiBi given
    as its 4D additive attention mask: causal + padding mask plus transformers' Bloom `build_alibi_tensor`
    (the published ALiBi slopes and key positions). Softmax is shift-invariant per row, so Bloom's
    slope * key position equals Baichuan-13B's slope * (key - query position) on every allowed key.
    6 heads: not a power of two, so the interleaved extra slopes are exercised."""
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", hidden_size=96, num_attention_heads=6, num_key_value_heads=6,
                   attn_implementation="eager")
    folder, arrays = _baichuan_checkpoint(hf, tmp_path / "baichuan2_13b", "alibi")
    heads = hf.config.num_attention_heads

    def reference(ids, mask, labels):
        alibi = remote_conversions.alibi_inputs(mask, heads)
        return hf_forward(hf, ids, alibi["attention_mask"], labels, position_ids=alibi["position_ids"])

    assert_remote_parity(folder, arrays, "BaichuanForCausalLM", reference, tmp_path / "ours")


def test_decode_step_that_cannot_be_traced_falls_back_without_crashing(tmp_path, tiny_llama):
    """Baichuan-13B's ALiBi decode step fails MindSpore's trace; closing the broken trace used to segfault the
    process (exit 139). generate must fall back to op-by-op with the eager result, and a later model's decode
    step must still compile."""
    from mindformers_hf.generation.runner import StaticRunner

    hf = hf_native("LlamaConfig", "LlamaForCausalLM", hidden_size=32, num_attention_heads=4, num_key_value_heads=4)
    folder, _ = _baichuan_checkpoint(hf, tmp_path / "baichuan_alibi", "alibi")
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = np.array([[5, 6, 7, 8]])
    got = model.generate(prompt, max_new_tokens=5, do_sample=False)
    np.testing.assert_array_equal(got, model.generate(prompt, max_new_tokens=5, do_sample=False,
                                                      disable_compile=True))
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama)
    llama.generate(prompt, max_new_tokens=3, do_sample=False)
    graphs = [graph for graph in llama.__dict__.get("_mindformers_decode_graphs", []) if graph.key[2]]
    assert graphs and all(graph.step.compiled for graph in graphs) and StaticRunner.supports(llama)


def test_baichuan_config_rules():
    """Released Baichuan configs do not say rotary vs ALiBi or NormHead: vLLM's rules decide."""
    from mindformers_hf.models.baichuan import BaichuanConfig, alibi_slopes

    assert BaichuanConfig(hidden_size=4096, vocab_size=125696).position_embedding == "rope"
    assert BaichuanConfig(hidden_size=5120, vocab_size=125696).position_embedding == "alibi"
    assert BaichuanConfig(hidden_size=4096, vocab_size=125696).norm_head
    assert not BaichuanConfig(hidden_size=4096, vocab_size=64000).norm_head
    # ALiBi slopes against transformers' Bloom implementation, 40 heads as Baichuan2-13B
    import torch
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    bloom = build_alibi_tensor(torch.tensor([[1, 1]]), 40, torch.float32)[:, 0, 1].numpy()  # slope * position 1
    np.testing.assert_allclose(alibi_slopes(40), bloom, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ ChatGLM
def test_chatglm_matches_glm_conversion(tmp_path):
    """Reference: GLM (transformers' GlmForCausalLM, the architecture of GLM-4-9B-chat-hf). transformers'
    models/glm/convert_glm_weights_to_hf.py converts ChatGLM checkpoints with STATE_DICT_MAPPING
    (transformer. -> model., embedding.word_embeddings -> embed_tokens, encoder.layers -> layers,
    final_layernorm -> norm, self_attention -> self_attn, query_key_value -> q/k/v (rows q, k, v),
    dense -> o_proj, dense_h_to_4h -> gate_up_proj, dense_4h_to_h -> down_proj, output_layer -> lm_head)
    and convert_config (padded_vocab_size, ffn_hidden_size, num_layers, multi_query_group_num, seq_length,
    layernorm_epsilon, rope_theta = 10000 * rope_ratio, kv_channels, add_qkv_bias). We apply the inverse,
    plus the rotary inv_freq buffer ChatGLM2 checkpoints carry."""
    folder, arrays, hf = chatglm_checkpoint(tmp_path / "chatglm")
    assert_remote_parity(folder, arrays, "ChatGLMForConditionalGeneration", _hf_reference(hf), tmp_path / "ours",
                         skipped=("transformer.rotary_pos_emb.inv_freq",))


def chatglm_checkpoint(folder):
    """A ChatGLM-format folder of a random GLM model: (folder, arrays, the HF GLM model)."""
    import torch

    hf = hf_native("GlmConfig", "GlmForCausalLM", head_dim=16, num_key_value_heads=2, attention_bias=True,
                   rope_parameters={"rope_type": "default", "rope_theta": 500000.0, "partial_rotary_factor": 0.5})
    tensors = {**chatglm_tensors(hf), "transformer.rotary_pos_emb.inv_freq": torch.rand(8)}
    config = chatglm_config(hf)
    folder, arrays = write_remote(folder, config, tensors)
    return folder, arrays, hf


def test_chatglm_v1_and_unsupported_options_raise(tmp_path):
    from mindformers_hf.models.chatglm import ChatGLMConfig

    with pytest.raises(NotImplementedError, match="ChatGLM-6B .*first generation"):
        ChatGLMConfig.from_dict({"position_encoding_2d": True, "inner_hidden_size": 16384})
    with pytest.raises(NotImplementedError, match="quantization_bit=4"):
        ChatGLMConfig.from_dict({"quantization_bit": 4})


# ------------------------------------------------------------------------------------------------ Qwen v1
def test_qwen_matches_qwen2_conversion(tmp_path):
    """Reference: Qwen2 (transformers). The published Qwen -> LLaMA-layout conversion (LLaMA-Factory's
    scripts/llamafy_qwen.py) maps transformer.wte -> embed_tokens, h.N.ln_1 / ln_2 -> input_layernorm /
    post_attention_layernorm, attn.c_attn (weight and bias, rows q, k, v) -> q/k/v_proj, attn.c_proj ->
    o_proj, mlp.w1 -> up_proj, mlp.w2 -> gate_proj, mlp.c_proj -> down_proj, ln_f -> norm, and halves
    `intermediate_size` (Qwen counts w1 and w2 together, modeling_qwen.py's QWenMLP); Qwen2 has exactly
    the q/k/v-only bias. We apply the inverse."""
    hf = hf_native("Qwen2Config", "Qwen2ForCausalLM", num_key_value_heads=4, rope_theta=10000.0)
    tensors, config = qwen_tensors(hf), qwen_config(hf)
    folder, arrays = write_remote(tmp_path / "qwen", config, tensors)
    ours = assert_remote_parity(folder, arrays, "QWenLMHeadModel", _hf_reference(hf), tmp_path / "ours")
    with pytest.raises(NotImplementedError, match="use_dynamic_ntk / use_logn_attn beyond seq_length=16"):
        ours(input_ids=np.ones((1, 17), np.int64))


# ------------------------------------------------------------------------------------------------ loading rules
def test_remote_format_loads_without_trust_remote_code(tmp_path):
    """A folder whose config names remote code (auto_map) of a format we implement loads natively, says so
    once, and AutoConfig returns our config class; InternLM2 weights under model_type "internlm" (as some
    repos ship them) are recognised by their architecture."""
    from mindformers_hf import utils

    hf = hf_native("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=4)
    config = {"architectures": ["InternLMForCausalLM"], "model_type": "internlm", "bias": False,
              "auto_map": _auto_map("configuration_internlm", "modeling_internlm", "InternLMConfig",
                                    "InternLMForCausalLM"),
              "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "rms_norm_eps": hf.config.rms_norm_eps, "tie_word_embeddings": False}
    folder, _ = write_remote(tmp_path / "m", config, dict(hf.named_parameters()))
    model = AutoModelForCausalLM.from_pretrained(folder)  # no trust_remote_code
    assert type(model).__name__ == "InternLMForCausalLM"
    said = [m for m in utils._warned if folder in m and "never executed" in m]
    assert len(said) == 1 and "'internlm' format natively" in said[0]
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "InternLMConfig"
    assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "InternLMConfig"

    with open(os.path.join(folder, "config.json")) as f:
        data = json.load(f)
    data["architectures"] = ["InternLM2ForCausalLM"]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(data, f)
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "InternLM2Config"
