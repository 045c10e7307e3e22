"""The remote-code checkpoint formats (InternLM v1, InternLM2, Baichuan2 7B and 13B, ChatGLM2/3, Qwen v1) written
from a random HF-native model with the inverse of a published conversion (cited at each writer), and the checks
that compare our loading of them with that HF-native model in transformers.

Every writer takes a folder and returns (folder, arrays written, the HF-native reference model). The model
matrix (tests/models/matrix.py) and tests/models/test_remote_formats.py both use them.
"""
import json
import os

import numpy as np

from mindformers_hf import AutoModelForCausalLM
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


def assert_remote_load(folder, arrays, architecture, save_to, skipped=()):
    """Load: our class, and save_pretrained writes the format back (its tensor names, layouts, the same bits, the
    config's architectures and auto_map); the saved folder loads to the same logits. Returns our model."""
    ours = AutoModelForCausalLM.from_pretrained(folder)
    assert type(ours).__name__ == architecture
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
    ids, mask = batch(VOCAB, length=11, pad_left=(0, 3))
    np.testing.assert_array_equal(AutoModelForCausalLM.from_pretrained(save_to)(input_ids=ids, attention_mask=mask)
                                  .logits, ours(input_ids=ids, attention_mask=mask).logits)
    return ours


def assert_remote_forward(ours, reference):
    """Forward parity against `reference(ids, mask, labels)` (the HF-native model's output on the same weights):
    logits at unpadded positions, argmax, the loss, and cached greedy decoding (each step's token and logits equal
    the reference's uncached forward over the prompt plus the tokens chosen so far)."""
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

    prompt = ids[:1]
    tokens, step_logits = our_greedy(ours, prompt, 4)
    full = np.concatenate([prompt, tokens], 1)
    want_steps = reference(full, np.ones_like(full), None).logits.numpy()[:, prompt.shape[1] - 1:-1]
    np.testing.assert_array_equal(tokens, want_steps.argmax(-1))
    assert np.abs(step_logits - want_steps).max() <= LOGITS_ATOL


def hf_reference(model):
    return lambda ids, mask, labels: hf_forward(model, ids, mask, labels)


def _auto_map(config_module, model_module, config_class, model_class):
    return {"AutoConfig": f"{config_module}.{config_class}", "AutoModelForCausalLM": f"{model_module}.{model_class}"}


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


def internlm_checkpoint(folder):
    """InternLM v1: LLaMA (transformers) with attention_bias=True — InternLM v1's modeling_internlm.py is LLaMA's
    with `bias=config.bias` on q/k/v/o and the same tensor names, so the conversion (as in InternLM's convert
    scripts) is the config field bias -> attention_bias only."""
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
    """Baichuan2-7B (rotary) from LLaMA."""
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=4)
    folder, arrays = _baichuan_checkpoint(hf, folder, "rope")
    return folder, arrays, hf


def baichuan_alibi_checkpoint(folder, **overrides):
    """Baichuan2-13B (ALiBi) from LLaMA (the matrix's row: 6 heads, not a power of two, so the interleaved extra
    slopes are exercised). Its reference is `alibi_llama` over this LLaMA model."""
    heads = overrides.get("num_attention_heads", 4)
    hf = hf_native("LlamaConfig", "LlamaForCausalLM", **{**overrides, "num_key_value_heads": heads})
    folder, arrays = _baichuan_checkpoint(hf, folder, "alibi")
    return folder, arrays, hf


def alibi_llama(model):
    """Baichuan2-13B's attention on transformers' LLaMA modules: no HF-native architecture has ALiBi with RMSNorm
    and SwiGLU, so rotary is switched off (cos 1, sin 0) and attention is an eager attention function registered
    through transformers' AttentionInterface that adds transformers' Bloom ALiBi (`build_alibi_tensor`: the
    published slopes times the key position) to the scores. Softmax is shift-invariant per row, so slope * key
    index equals Baichuan-13B's slope * (key - query position) on every allowed key, padded or cached. Everything
    else, `generate` included (greedy, beam search, sampling), is transformers' own."""
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    heads = model.config.num_attention_heads
    slopes = build_alibi_tensor(torch.ones(1, 2), heads, torch.float32)[:, 0, 1]    # [H]: slope * position 1

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling                  # [B, H, S, T]
        scores = scores + slopes[None, :, None, None] * torch.arange(key.shape[-2], dtype=torch.float32)
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, :, :key.shape[-2]]
        probs = torch.softmax(scores, -1)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

    AttentionInterface.register("baichuan_alibi", attention)
    if "baichuan_alibi" not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register("baichuan_alibi", eager_mask)
    model.set_attn_implementation("baichuan_alibi")

    rotary = model.model.rotary_emb
    head_dim = model.config.hidden_size // heads

    def no_rotary(x, position_ids, *args, **kwargs):
        shape = position_ids.shape + (head_dim,)
        return torch.ones(shape, dtype=x.dtype), torch.zeros(shape, dtype=x.dtype)

    rotary.forward = no_rotary
    return model


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


def qwen_checkpoint(folder):
    """Qwen v1 from Qwen2 (transformers). The published Qwen -> LLaMA-layout conversion (LLaMA-Factory's
    scripts/llamafy_qwen.py) maps transformer.wte -> embed_tokens, h.N.ln_1 / ln_2 -> input_layernorm /
    post_attention_layernorm, attn.c_attn (weight and bias, rows q, k, v) -> q/k/v_proj, attn.c_proj ->
    o_proj, mlp.w1 -> up_proj, mlp.w2 -> gate_proj, mlp.c_proj -> down_proj, ln_f -> norm, and halves
    `intermediate_size` (Qwen counts w1 and w2 together, modeling_qwen.py's QWenMLP); Qwen2 has exactly
    the q/k/v-only bias. We apply the inverse. `seq_length` 16 bounds its dynamic-NTK / logn scaling."""
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


def baichuan_z_loss_check(ours, folder, hf_folder):
    """Baichuan2's z-loss: its modeling file adds z_loss_weight * mean(max logit ** 2) over all shifted positions;
    the expected value is computed from the reference's logits."""
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(folder, z_loss_weight=0.5)
    ids, mask = batch(VOCAB, length=9, pad_left=(0, 0), seed=2)
    labels = ids.copy()
    labels[0, :3] = -100
    ref = hf_forward(hf, ids, mask, labels)
    want = float(ref.loss) + 0.5 * float((ref.logits[:, :-1].max(-1).values ** 2).mean())
    got = float(ours(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert abs(got - want) <= LOSS_RTOL * abs(want)


def qwen_seq_length_check(ours, folder, hf_folder):
    """Qwen's dynamic-NTK / logn scaling equals Qwen2 only within `seq_length`: beyond it we refuse."""
    import pytest

    with pytest.raises(NotImplementedError, match="use_dynamic_ntk / use_logn_attn beyond seq_length=16"):
        ours(input_ids=np.ones((1, 17), np.int64))
