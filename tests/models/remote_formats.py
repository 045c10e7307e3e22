"""The remote-code checkpoint formats (InternLM v1, InternLM2, Baichuan2 7B and 13B, ChatGLM2/3, Qwen v1) written
from a random HF-native model with the inverse of a published conversion (cited at each writer), and the checks
that compare our loading of them with that HF-native model in transformers. The conversions themselves (tensors
and config.json from an HF-native model) are tests/models/remote_conversions.py's, here on the family matrix's
sizes (tests/conftest.py's TINY_LLAMA).

Every writer takes a folder and returns (folder, arrays written, the HF-native reference model). The model
matrix (tests/models/matrix.py) and tests/models/test_remote_formats.py both use them.
"""
import json
import os

import numpy as np

from mindformers_hf import AutoModelForCausalLM
from tests.conftest import TINY_LLAMA, batch
from tests.models import remote_conversions as conv
from tests.models.family_parity import LOGITS_ATOL, LOSS_RTOL, our_greedy
from tests.models.remote_conversions import read_tensors, write_remote  # noqa: F401 (users import them from here)

VOCAB = TINY_LLAMA["vocab_size"]


def hf_native(config_class, model_class, seed=0, **overrides):
    """A random HF-native model on the matrix's sizes (random norms and biases, so a misplaced one cannot hide)."""
    return conv.hf_native(config_class, model_class, seed, base=TINY_LLAMA, **overrides)


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


_auto_map = conv.auto_map


def internlm2_checkpoint(folder):
    """An InternLM2-format folder of a random LLaMA model: (folder, arrays, the HF LLaMA model). wqkv holds, per KV
    group, its query heads, then its key head and value head (remote_conversions.internlm2_rows)."""
    hf = conv.internlm2_model(base=TINY_LLAMA)
    folder, arrays = write_remote(folder, conv.internlm2_config(hf), conv.internlm2_tensors(hf))
    return folder, arrays, hf


def internlm_checkpoint(folder):
    """InternLM v1: LLaMA (transformers) with attention_bias=True — InternLM v1's modeling_internlm.py is LLaMA's
    with `bias=config.bias` on q/k/v/o and the same tensor names, so the conversion (as in InternLM's convert
    scripts) is the config field bias -> attention_bias only."""
    hf = conv.internlm_model(base=TINY_LLAMA)
    folder, arrays = write_remote(folder, conv.internlm_config(hf), dict(hf.named_parameters()))
    return folder, arrays, hf


def _baichuan_checkpoint(hf, folder, position_embedding):
    """Baichuan2 tensors from a LLaMA model — the inverse of LLaMA-Factory's scripts/llamafy_baichuan2.py,
    which splits `W_pack` into q/k/v (rows q, k, v) and L2-normalises each lm_head row (NormHead). The head
    written here is the reference's normalised head times random positive row scales (torch's global generator),
    which NormHead undoes."""
    tensors = conv.baichuan_tensors(hf)
    tensors["lm_head.weight"] = conv.normalise_head(hf, seed=None)  # the reference (llamafied) holds the normalised one
    return write_remote(folder, conv.baichuan_config(hf, position_embedding), tensors)


def baichuan_checkpoint(folder):
    """Baichuan2-7B (rotary) from LLaMA."""
    hf = conv.baichuan_model(base=TINY_LLAMA)
    folder, arrays = _baichuan_checkpoint(hf, folder, "rope")
    return folder, arrays, hf


def baichuan_alibi_checkpoint(folder, **overrides):
    """Baichuan2-13B (ALiBi) from LLaMA (the matrix's row: 6 heads, not a power of two, so the interleaved extra
    slopes are exercised). Its reference is `alibi_llama` over this LLaMA model."""
    heads = overrides.get("num_attention_heads", 4)
    hf = conv.baichuan_model(base=TINY_LLAMA, **{**overrides, "num_key_value_heads": heads})
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
    """A ChatGLM-format folder of a random GLM model: (folder, arrays, the HF GLM model); the file also holds the
    rotary inv_freq buffer ChatGLM's checkpoints carry (random: it must be skipped, not used)."""
    import torch

    hf = conv.chatglm_model(base=TINY_LLAMA, head_dim=16)
    tensors = {**conv.chatglm_tensors(hf), "transformer.rotary_pos_emb.inv_freq": torch.rand(8)}
    folder, arrays = write_remote(folder, conv.chatglm_config(hf), tensors)
    return folder, arrays, hf


def qwen_checkpoint(folder):
    """Qwen v1 from Qwen2 (transformers). The published Qwen -> LLaMA-layout conversion (LLaMA-Factory's
    scripts/llamafy_qwen.py) maps transformer.wte -> embed_tokens, h.N.ln_1 / ln_2 -> input_layernorm /
    post_attention_layernorm, attn.c_attn (weight and bias, rows q, k, v) -> q/k/v_proj, attn.c_proj ->
    o_proj, mlp.w1 -> up_proj, mlp.w2 -> gate_proj, mlp.c_proj -> down_proj, ln_f -> norm, and halves
    `intermediate_size` (Qwen counts w1 and w2 together, modeling_qwen.py's QWenMLP); Qwen2 has exactly
    the q/k/v-only bias. We apply the inverse. `seq_length` 16 bounds its dynamic-NTK / logn scaling."""
    hf = conv.qwen_model(base=TINY_LLAMA)
    folder, arrays = write_remote(folder, conv.qwen_config(hf), conv.qwen_tensors(hf))
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
