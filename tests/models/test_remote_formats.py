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
from mindformers_hf.safetensors_io import SafetensorsFile
from tests.conftest import TINY_LLAMA, batch
from tests.models.family_parity import LOGITS_ATOL, LOSS_RTOL, our_greedy

VOCAB = TINY_LLAMA["vocab_size"]


def hf_native(config_class, model_class, seed=0, **overrides):
    """A random HF-native model (random norms and biases, so a misplaced one cannot hide)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**{**TINY_LLAMA, **overrides})
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def write_remote(folder, config, tensors):
    """A remote-format folder: config.json (with the repo's auto_map; no .py file exists) + model.safetensors
    written by the safetensors package itself."""
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    arrays = {k: np.ascontiguousarray(v.detach().float().numpy()) for k, v in tensors.items()}
    save_file(arrays, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return str(folder), arrays


def read_tensors(folder):
    reader = SafetensorsFile(os.path.join(folder, "model.safetensors"))
    out = {k: np.array(reader.get(k)) for k in reader.keys()}
    reader.close()
    return out


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


def _auto_map(config_module, model_module, config_class, model_class):
    return {"AutoConfig": f"{config_module}.{config_class}", "AutoModelForCausalLM": f"{model_module}.{model_class}"}


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
    import torch

    hf = hf_native("LlamaConfig", "LlamaForCausalLM", attention_bias=True, num_attention_heads=4,
                   num_key_value_heads=2, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                           "rope_theta": 1000000.0})
    c = hf.config
    kv, d = c.num_key_value_heads, c.hidden_size // c.num_attention_heads
    g = c.num_attention_heads // kv
    tensors = {"model.tok_embeddings.weight": hf.model.embed_tokens.weight, "model.norm.weight": hf.model.norm.weight,
               "output.weight": hf.lm_head.weight}
    for i, layer in enumerate(hf.model.layers):
        a, p = layer.self_attn, f"model.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = (getattr(getattr(a, n), kind) for n in ("q_proj", "k_proj", "v_proj"))
            rest = q.shape[1:]
            wqkv = torch.cat([q.reshape((kv, g, d) + rest), k.reshape((kv, 1, d) + rest),
                              v.reshape((kv, 1, d) + rest)], 1)
            tensors[p + f"attention.wqkv.{kind}"] = wqkv.reshape((-1,) + rest)
            tensors[p + f"attention.wo.{kind}"] = getattr(a.o_proj, kind)
        tensors.update({p + "attention_norm.weight": layer.input_layernorm.weight,
                        p + "ffn_norm.weight": layer.post_attention_layernorm.weight,
                        p + "feed_forward.w1.weight": layer.mlp.gate_proj.weight,
                        p + "feed_forward.w3.weight": layer.mlp.up_proj.weight,
                        p + "feed_forward.w2.weight": layer.mlp.down_proj.weight})
    config = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
              "auto_map": _auto_map("configuration_internlm2", "modeling_internlm2", "InternLM2Config",
                                    "InternLM2ForCausalLM"),
              "vocab_size": VOCAB, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
              "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
              "num_key_value_heads": kv, "hidden_act": "silu", "max_position_embeddings": 64,
              "rms_norm_eps": c.rms_norm_eps, "bias": True, "rope_theta": 1000000,
              "rope_scaling": {"type": "linear", "factor": 2.0}, "attn_implementation": "eager",
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
              "torch_dtype": "float32"}
    folder, arrays = write_remote(folder, config, tensors)
    return folder, arrays, hf


# ------------------------------------------------------------------------------------------------ InternLM v1
def test_internlm_matches_llama_with_attention_bias(tmp_path):
    """Reference: LLaMA (transformers) with attention_bias=True — InternLM v1's modeling_internlm.py is
    LLaMA's with `bias=config.bias` on q/k/v/o and the same tensor names, so the conversion (as in
    InternLM's convert scripts) is the config field bias -> attention_bias only."""
    folder, arrays, hf = internlm_checkpoint(tmp_path / "internlm")
    assert_remote_parity(folder, arrays, "InternLMForCausalLM", _hf_reference(hf), tmp_path / "ours")


def internlm_checkpoint(folder):
    """An InternLM (v1)-format folder of a random LLaMA model: (folder, arrays, the HF LLaMA model)."""
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", attention_bias=True, num_key_value_heads=4,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    c = hf.config
    config = {"architectures": ["InternLMForCausalLM"], "model_type": "internlm",
              "auto_map": _auto_map("configuration_internlm", "modeling_internlm", "InternLMConfig",
                                    "InternLMForCausalLM"),
              "vocab_size": VOCAB, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
              "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
              "hidden_act": "silu", "max_position_embeddings": 64, "rms_norm_eps": c.rms_norm_eps,
              "bias": True, "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    folder, arrays = write_remote(folder, config, dict(hf.named_parameters()))
    return folder, arrays, hf


# ------------------------------------------------------------------------------------------------ Baichuan2
def _baichuan_checkpoint(hf, folder, position_embedding):
    """Baichuan2 tensors from a LLaMA model — the inverse of LLaMA-Factory's scripts/llamafy_baichuan2.py,
    which splits `W_pack` into q/k/v (rows q, k, v) and L2-normalises each lm_head row (NormHead). The head
    written here is the reference's normalised head times random positive row scales, which NormHead undoes."""
    import torch

    with torch.no_grad():  # the reference (the llamafied model) holds the normalised head
        hf.lm_head.weight.copy_(torch.nn.functional.normalize(hf.lm_head.weight))
    scales = torch.empty(hf.lm_head.weight.shape[0], 1).uniform_(0.5, 2.0)
    c = hf.config
    tensors = {"model.embed_tokens.weight": hf.model.embed_tokens.weight, "model.norm.weight": hf.model.norm.weight,
               "lm_head.weight": hf.lm_head.weight * scales}
    for i, layer in enumerate(hf.model.layers):
        a, p = layer.self_attn, f"model.layers.{i}."
        tensors[p + "self_attn.W_pack.weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        tensors[p + "self_attn.o_proj.weight"] = a.o_proj.weight
        for name in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"):
            tensors[p + name + ".weight"] = layer.get_submodule(name).weight
    config = {"architectures": ["BaichuanForCausalLM"], "model_type": "baichuan",
              "auto_map": _auto_map("configuration_baichuan", "modeling_baichuan", "BaichuanConfig",
                                    "BaichuanForCausalLM"),
              "vocab_size": VOCAB, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
              "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
              "hidden_act": "silu", "model_max_length": 64, "rms_norm_eps": c.rms_norm_eps,
              "tie_word_embeddings": False, "z_loss_weight": 0, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 0,
              # the released configs leave these to the modeling file shipped (see configuration_baichuan.py:
              # hidden_size 4096 -> rotary, vocab 125696 -> NormHead); a tiny model states them
              "position_embedding": position_embedding, "norm_head": True}
    if position_embedding == "rope":
        config["max_position_embeddings"] = 64
    return write_remote(folder, config, tensors)


def baichuan_checkpoint(folder):
    """A Baichuan2-7B-format folder (rotary, NormHead) of a random LLaMA model: (folder, arrays, the HF model)."""
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=4)
    return _baichuan_checkpoint(hf, folder, "rope") + (hf,)


def test_baichuan2_7b_matches_llama_conversion(tmp_path):
    """Reference: LLaMA (transformers) after llamafy_baichuan2's conversion (W_pack split, head normalised).
    Also Baichuan2's z-loss: its modeling file adds z_loss_weight * mean(max logit ** 2) over all shifted
    positions; the expected value is computed from the reference's logits."""
    folder, arrays, hf = baichuan_checkpoint(tmp_path / "baichuan2_7b")
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
    folder, arrays, reference = baichuan_alibi_checkpoint(tmp_path / "baichuan2_13b", hidden_size=96,
                                                          num_attention_heads=6)
    assert_remote_parity(folder, arrays, "BaichuanForCausalLM", reference, tmp_path / "ours")


def baichuan_alibi_checkpoint(folder, **overrides):
    """A Baichuan2-13B-format folder (ALiBi, NormHead) of a random LLaMA model: (folder, arrays,
    reference(ids, mask, labels) -> the HF LLaMA model's output with rotary off and Bloom's ALiBi as its mask)."""
    import torch
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    heads = overrides.get("num_attention_heads", 4)
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", **{**overrides, "num_key_value_heads": heads},
                   attn_implementation="eager")
    folder, arrays = _baichuan_checkpoint(hf, folder, "alibi")

    def reference(ids, mask, labels):
        m = torch.tensor(np.asarray(mask))
        bsz, length = m.shape
        alibi = build_alibi_tensor(m, heads, torch.float32).reshape(bsz, heads, 1, length)
        allowed = torch.tril(torch.ones(length, length, dtype=torch.bool))[None, None] & m.bool()[:, None, None, :]
        additive = torch.where(allowed, 0.0, torch.finfo(torch.float32).min) + alibi         # [B, H, S, T]
        return hf_forward(hf, ids, additive, labels, position_ids=torch.zeros(bsz, length, dtype=torch.long))

    return folder, arrays, reference


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
    c = hf.config
    layer = "transformer.encoder.layers.{}."
    tensors = {"transformer.embedding.word_embeddings.weight": hf.model.embed_tokens.weight,
               "transformer.encoder.final_layernorm.weight": hf.model.norm.weight,
               "transformer.output_layer.weight": hf.lm_head.weight,
               "transformer.rotary_pos_emb.inv_freq": torch.rand(8)}
    for i, block in enumerate(hf.model.layers):
        p, a = layer.format(i), block.self_attn
        for kind in ("weight", "bias"):
            tensors[p + f"self_attention.query_key_value.{kind}"] = torch.cat(
                [getattr(a.q_proj, kind), getattr(a.k_proj, kind), getattr(a.v_proj, kind)])
        tensors.update({p + "self_attention.dense.weight": a.o_proj.weight,
                        p + "input_layernorm.weight": block.input_layernorm.weight,
                        p + "post_attention_layernorm.weight": block.post_attention_layernorm.weight,
                        p + "mlp.dense_h_to_4h.weight": block.mlp.gate_up_proj.weight,
                        p + "mlp.dense_4h_to_h.weight": block.mlp.down_proj.weight})
    config = {"architectures": ["ChatGLMModel"], "model_type": "chatglm",
              "auto_map": {**_auto_map("configuration_chatglm", "modeling_chatglm", "ChatGLMConfig",
                                       "ChatGLMForConditionalGeneration"),
                           "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"},
              "num_layers": c.num_hidden_layers, "padded_vocab_size": VOCAB, "hidden_size": c.hidden_size,
              "ffn_hidden_size": c.intermediate_size, "kv_channels": c.head_dim,
              "num_attention_heads": c.num_attention_heads, "multi_query_attention": True,
              "multi_query_group_num": c.num_key_value_heads, "seq_length": 64,
              "layernorm_epsilon": c.rms_norm_eps, "rope_ratio": 50, "rmsnorm": True,
              "apply_residual_connection_post_layernorm": False, "post_layer_norm": True, "add_qkv_bias": True,
              "add_bias_linear": False, "original_rope": True, "hidden_dropout": 0.0, "attention_dropout": 0.0,
              "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
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
    folder, arrays, hf = qwen_checkpoint(tmp_path / "qwen")
    ours = assert_remote_parity(folder, arrays, "QWenLMHeadModel", _hf_reference(hf), tmp_path / "ours")
    with pytest.raises(NotImplementedError, match="use_dynamic_ntk / use_logn_attn beyond seq_length=16"):
        ours(input_ids=np.ones((1, 17), np.int64))


def qwen_checkpoint(folder):
    """A Qwen (v1)-format folder of a random Qwen2 model: (folder, arrays, the HF Qwen2 model)."""
    import torch

    hf = hf_native("Qwen2Config", "Qwen2ForCausalLM", num_key_value_heads=4, rope_theta=10000.0)
    c = hf.config
    tensors = {"transformer.wte.weight": hf.model.embed_tokens.weight, "transformer.ln_f.weight": hf.model.norm.weight,
               "lm_head.weight": hf.lm_head.weight}
    for i, block in enumerate(hf.model.layers):
        p, a = f"transformer.h.{i}.", block.self_attn
        for kind in ("weight", "bias"):
            tensors[p + f"attn.c_attn.{kind}"] = torch.cat([getattr(a.q_proj, kind), getattr(a.k_proj, kind),
                                                            getattr(a.v_proj, kind)])
        tensors.update({p + "attn.c_proj.weight": a.o_proj.weight, p + "ln_1.weight": block.input_layernorm.weight,
                        p + "ln_2.weight": block.post_attention_layernorm.weight,
                        p + "mlp.w1.weight": block.mlp.up_proj.weight, p + "mlp.w2.weight": block.mlp.gate_proj.weight,
                        p + "mlp.c_proj.weight": block.mlp.down_proj.weight})
    config = {"architectures": ["QWenLMHeadModel"], "model_type": "qwen",
              "auto_map": _auto_map("configuration_qwen", "modeling_qwen", "QWenConfig", "QWenLMHeadModel"),
              "vocab_size": VOCAB, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
              "num_attention_heads": c.num_attention_heads, "kv_channels": c.hidden_size // c.num_attention_heads,
              "intermediate_size": 2 * c.intermediate_size, "layer_norm_epsilon": c.rms_norm_eps,
              "max_position_embeddings": 64, "seq_length": 16, "rotary_emb_base": 10000, "rotary_pct": 1.0,
              "no_bias": True, "use_dynamic_ntk": True, "use_logn_attn": True, "scale_attn_weights": True,
              "bf16": False, "fp16": False, "fp32": False, "use_flash_attn": "auto", "tie_word_embeddings": False,
              "emb_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
    folder, arrays = write_remote(folder, config, tensors)
    return folder, arrays, hf


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
