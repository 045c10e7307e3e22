"""Model methods beyond loading: resize_token_embeddings, embeddings access, tie_weights, num_parameters,
activation (gradient) checkpointing. Expected values come from transformers on the same checkpoints."""
import numpy as np
import pytest

import mindspore as ms
from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.layers import Embedding
from tests.conftest import batch, make_hf_checkpoint


def _hf(folder):
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("tied"), tie_word_embeddings=True, seed=2)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("gpt2"), "GPT2Config", "GPT2LMHeadModel", seed=3,
                              n_embd=64, n_layer=2, n_head=4, n_positions=64, tie_word_embeddings=True)


# ---------------------------------------------------------------- resize_token_embeddings
@pytest.mark.parametrize("which", ["untied", "tied", "gpt2"])
def test_resize_grows_like_transformers(which, tiny_llama, tied_llama, tiny_gpt2):
    import torch

    folder = {"untied": tiny_llama, "tied": tied_llama, "gpt2": tiny_gpt2}[which]
    model, hf = AutoModelForCausalLM.from_pretrained(folder), _hf(folder)
    old_embed = model.get_input_embeddings().weight.asnumpy().copy()
    old_head = model.get_output_embeddings().weight.asnumpy().copy()
    ids, _ = batch(pad_left=(0, 0))
    before = model(input_ids=ids).logits
    torch.manual_seed(0)
    hf.resize_token_embeddings(150)
    embeddings = model.resize_token_embeddings(150)

    assert embeddings is model.get_input_embeddings()
    want = hf.get_input_embeddings().weight.detach().numpy()
    got = embeddings.weight.asnumpy()
    assert got.shape == want.shape == (150, old_embed.shape[1])
    np.testing.assert_array_equal(got[:128], old_embed)  # old rows unchanged
    # new rows: the old rows' mean plus draws of std ~sqrt(1e-9) * (row spread), in both libraries
    np.testing.assert_allclose(got[128:], want[128:], atol=2e-5)
    np.testing.assert_allclose(got[128:].mean(axis=0), old_embed.mean(axis=0), atol=2e-5)
    assert model.config.vocab_size == hf.config.vocab_size == 150
    head = model.get_output_embeddings()
    if which == "untied":
        assert head is not embeddings and head.weight.shape == (150, 64)
        np.testing.assert_array_equal(head.weight.asnumpy()[:128], old_head)
        np.testing.assert_allclose(head.weight.asnumpy()[128:], hf.lm_head.weight.detach().numpy()[128:], atol=2e-5)
    else:
        assert head is embeddings  # still tied
    after = model(input_ids=ids).logits
    assert after.shape[-1] == 150
    np.testing.assert_allclose(after[..., :128], before, atol=1e-5)  # the old vocabulary scores the same


def test_resize_without_full_rank_rows_uses_the_mean_exactly(tmp_path):
    """Fewer old rows than dimensions: the covariance is singular and transformers (like us) uses the mean."""
    import torch

    folder = make_hf_checkpoint(tmp_path, vocab_size=16, seed=4)
    model, hf = AutoModelForCausalLM.from_pretrained(folder), _hf(folder)
    torch.manual_seed(0)
    hf.resize_token_embeddings(20)
    model.resize_token_embeddings(20)
    got = model.get_input_embeddings().weight.asnumpy()
    np.testing.assert_allclose(got, hf.get_input_embeddings().weight.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(got[16:], np.repeat(got[:16].mean(axis=0, keepdims=True), 4, axis=0), atol=1e-6)


def test_resize_pad_shrink_and_plain_init(tiny_llama, tmp_path):
    import transformers

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    hf = _hf(tiny_llama)
    assert model.resize_token_embeddings(130, pad_to_multiple_of=64).weight.shape[0] == \
        hf.resize_token_embeddings(130, pad_to_multiple_of=64).weight.shape[0] == 192
    assert model.resize_token_embeddings(pad_to_multiple_of=100).weight.shape[0] == 200  # pads the current size
    assert model.resize_token_embeddings().weight.shape[0] == 200  # nothing asked: nothing changes
    with pytest.raises(ValueError, match="not and integer"):
        model.resize_token_embeddings(130, pad_to_multiple_of=8.0)

    original = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rows = original.get_input_embeddings().weight.asnumpy().copy()
    original.resize_token_embeddings(100)
    np.testing.assert_array_equal(original.get_input_embeddings().weight.asnumpy(), rows[:100])
    assert original.lm_head.weight.shape == (100, 64) and original.config.vocab_size == 100

    np.random.seed(0)
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama)
    plain.resize_token_embeddings(128 + 4000, mean_resizing=False)
    added = plain.get_input_embeddings().weight.asnumpy()[128:]
    assert abs(added.std() - plain.config.initializer_range) < 1e-3 and abs(added.mean()) < 1e-3

    # the resized model saves and transformers reloads it with the new vocabulary
    original.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.vocab_size == 100
    ids, _ = batch(vocab=100, pad_left=(0, 0))
    np.testing.assert_allclose(original(input_ids=ids).logits,
                               reloaded(input_ids=__import__("torch").tensor(ids)).logits.detach().numpy(), atol=1e-4)


# ---------------------------------------------------------------- embeddings access, tying, counts
def test_embedding_access_and_tie_weights_match_transformers(tiny_llama):
    import torch

    model, hf = AutoModelForCausalLM.from_pretrained(tiny_llama), _hf(tiny_llama)
    assert model.model.get_output_embeddings() is None
    ids, _ = batch(pad_left=(0, 0))
    # a new embedding cell takes over the forward
    replacement = Embedding(128, 64)
    replacement.weight.set_data(ms.Tensor(hf.get_input_embeddings().weight.detach().numpy() * 2))
    model.set_input_embeddings(replacement)
    hf.set_input_embeddings(torch.nn.Embedding.from_pretrained(hf.get_input_embeddings().weight.detach() * 2))
    assert model.get_input_embeddings() is replacement
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model(input_ids=ids).logits, want, atol=1e-4)
    # tying after the fact: the embedding becomes the head, as in transformers
    model.config.tie_word_embeddings = hf.config.tie_word_embeddings = True
    model.tie_weights()
    hf.tie_weights()
    assert model.get_output_embeddings() is model.get_input_embeddings() and not hasattr(model, "lm_head")
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model(input_ids=ids).logits, want, atol=1e-4)
    assert model.num_parameters() == hf.num_parameters()


def test_num_parameters_only_trainable_matches_transformers(tiny_gpt2):
    model, hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2), _hf(tiny_gpt2)
    for name, param in model.named_parameters():
        if name.startswith("transformer.h.0."):
            param.requires_grad = False
    for name, param in hf.named_parameters():
        if name.startswith("transformer.h.0."):
            param.requires_grad_(False)
    assert model.num_parameters(only_trainable=True) == hf.num_parameters(only_trainable=True)
    assert model.num_parameters(only_trainable=True) < model.num_parameters() == hf.num_parameters()


# ---------------------------------------------------------------- activation checkpointing
def _loss_and_grads(model, ids, labels):
    params = [p for p in model.parameters() if p.requires_grad]
    fn = ms.value_and_grad(lambda: model(input_ids=ms.Tensor(ids), labels=ms.Tensor(labels)).loss, None, params)
    loss, grads = fn()
    return float(loss.asnumpy()), [g.asnumpy() for g in grads]


@pytest.fixture
def layer_calls(monkeypatch):
    """How many times each decoder layer's construct runs (twice per step when it is recomputed)."""
    from mindformers_hf.models.gpt2.modeling_gpt2 import GPT2Block
    from mindformers_hf.models.llama.modeling_llama import LlamaDecoderLayer

    calls = []
    for cls in (LlamaDecoderLayer, GPT2Block):
        original = cls.construct

        def counting(self, *args, _original=original, **kwargs):
            calls.append(type(self).__name__)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "construct", counting)
    return calls


@pytest.mark.parametrize("which", ["untied", "gpt2"])
def test_gradient_checkpointing_recomputes_with_equal_gradients(which, tiny_llama, tiny_gpt2, layer_calls):
    model = AutoModelForCausalLM.from_pretrained({"untied": tiny_llama, "gpt2": tiny_gpt2}[which])
    model.train()
    if which == "gpt2":
        model.config.resid_pdrop = model.config.embd_pdrop = 0.0
        model = AutoModelForCausalLM.from_config(model.config).train()  # no dropout, so runs compare
    ids, _ = batch(pad_left=(0, 0))
    labels = ids.copy()
    plain_loss, plain_grads = _loss_and_grads(model, ids, labels)
    plain_calls = len(layer_calls)
    assert plain_calls == 2 and not model.is_gradient_checkpointing
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing and model.is_activation_checkpointing
    layer_calls.clear()
    loss, grads = _loss_and_grads(model, ids, labels)
    assert len(layer_calls) == 2 * plain_calls  # each layer ran again in the backward pass
    assert loss == pytest.approx(plain_loss, abs=1e-6)
    for got, want in zip(grads, plain_grads):
        np.testing.assert_allclose(got, want, atol=1e-6)
    layer_calls.clear()
    model.eval()  # evaluation and generation never recompute
    model(input_ids=ids)
    assert len(layer_calls) == plain_calls
    model.train()
    model.gradient_checkpointing_disable()
    layer_calls.clear()
    _loss_and_grads(model, ids, labels)
    assert len(layer_calls) == plain_calls and not model.is_gradient_checkpointing


def test_checkpointing_every_n_layers_and_frozen_embeddings(tiny_llama, layer_calls):
    """HF's enable_input_require_grads case: frozen embeddings, checkpointed layers, gradients still reach
    the trainable weights, equal to the plain run."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).train()
    model.get_input_embeddings().weight.requires_grad = False
    ids, _ = batch(pad_left=(0, 0))
    plain_loss, plain_grads = _loss_and_grads(model, ids, ids)
    model.activation_checkpointing_enable(every_n_layers=2)
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, False]
    layer_calls.clear()
    loss, grads = _loss_and_grads(model, ids, ids)
    assert len(layer_calls) == 3 and loss == pytest.approx(plain_loss, abs=1e-6)
    for got, want in zip(grads, plain_grads):
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert np.abs(got).max() > 0
    with pytest.raises(NotImplementedError, match="offload"):
        model.activation_checkpointing_enable(offload=True)


def test_checkpointing_a_lora_model_keeps_its_gradients(tiny_llama, layer_calls):
    """The QLoRA-style recipe: LoRA adapters (only they train), checkpointing enabled through the PeftModel."""
    from mindformers_hf.peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.train()
    ids, _ = batch(pad_left=(0, 0))
    plain_loss, plain_grads = _loss_and_grads(model, ids, ids)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layer_calls.clear()
    loss, grads = _loss_and_grads(model, ids, ids)
    assert len(layer_calls) == 4 and loss == pytest.approx(plain_loss, abs=1e-6)
    assert len(grads) == 8  # 2 layers x (q, v) x (A, B)
    for got, want in zip(grads, plain_grads):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_resize_refuses_layers_it_cannot_resize(tiny_llama):
    from mindformers_hf.peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]))
    before = model.get_input_embeddings().weight.shape
    with pytest.raises(TypeError, match="ModulesToSaveWrapper"):
        model.resize_token_embeddings(140)
    assert model.get_input_embeddings().weight.shape == before == (128, 64)
