"""A whole tiny LLaMA with every kernel on vs every op on the reference: logits, loss and gradients."""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.ops import registry
from tests.conftest import batch


def _logits_loss_grads(model, ids, mask, labels):
    params = model.trainable_params()

    def loss_fn(ids, mask, labels):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        return out.loss, out.logits

    (loss, logits), grads = ms.value_and_grad(loss_fn, None, params, has_aux=True)(ids, mask, labels)
    return logits.asnumpy(), float(loss), {p.name: g.asnumpy() for p, g in zip(params, grads)}


def test_tiny_llama_kernels_match_reference(tiny_llama):
    if len(registry.implementations("causal_attention")) < 2:
        pytest.skip("no attention kernel on this device")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids, mask = batch(pad_left=(0, 3))
    labels = np.where(mask == 1, ids, -100)
    ids, mask, labels = (ms.Tensor(a) for a in (ids, mask, labels))
    with registry.use_kernels("all"):
        got = _logits_loss_grads(model, ids, mask, labels)
    with registry.use_kernels("reference"):
        want = _logits_loss_grads(model, ids, mask, labels)
    valid = mask.asnumpy().astype(bool)
    assert np.abs(got[0] - want[0])[valid].max() <= 1e-4
    assert abs(got[1] - want[1]) <= 1e-5 * abs(want[1])
    assert got[2].keys() == want[2].keys()
    for name, g in want[2].items():
        scale = max(1.0, np.abs(g).max())
        assert np.abs(got[2][name] - g).max() <= 1e-4 * scale, name


def test_attn_implementation_reaches_the_registry(tiny_llama):
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager")
    flash = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="flash_attention_2")
    assert eager.model.layers[0].self_attn.attn_implementation == "eager"
    assert registry.implementation_name("causal_attention", "eager") == registry.REFERENCE
    assert flash.model.layers[0].self_attn.attn_implementation == "flash_attention_2"
    ids, mask = batch(pad_left=(0, 3))
    valid = mask.astype(bool)
    a = eager(input_ids=ids, attention_mask=mask).logits
    b = flash(input_ids=ids, attention_mask=mask).logits
    assert np.abs(a - b)[valid].max() <= 1e-4
