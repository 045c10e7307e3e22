"""Whisper against HF transformers (torch, fp32, CPU) on a tiny checkpoint HF writes in the test.

Tolerances: 1e-4 absolute on encoder states and logits (both sides fp32; the conv front end, attention and
LayerNorm run different kernels, so equality is not expected bit for bit).
"""
import numpy as np
import pytest


TINY_WHISPER = dict(vocab_size=96, num_mel_bins=8, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                    decoder_layers=2, decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
                    max_source_positions=16, max_target_positions=24, pad_token_id=0, bos_token_id=1,
                    eos_token_id=2, decoder_start_token_id=3, suppress_tokens=None, begin_suppress_tokens=None)


def make_whisper_checkpoint(folder, seed=0, **overrides):
    """A random tiny Whisper written by HF's save_pretrained (norms and biases randomised too)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.WhisperConfig(**{**TINY_WHISPER, **overrides})
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return str(folder)


def features(batch=2, seed=1, mel=8, frames=32):
    return np.random.default_rng(seed).standard_normal((batch, mel, frames)).astype(np.float32)


def hf_model(folder, cls="WhisperForConditionalGeneration"):
    import torch
    import transformers

    return getattr(transformers, cls).from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return make_whisper_checkpoint(tmp_path_factory.mktemp("tiny_whisper"))


def test_logits_encoder_and_loss_match_hf(tiny_whisper):
    import torch
    from mindformers_hf.models.whisper import WhisperForConditionalGeneration

    feats = features()
    labels = np.array([[5, 9, 17, 33, 2, -100], [7, 8, 90, 2, -100, -100]], np.int64)
    with torch.no_grad():
        ref = hf_model(tiny_whisper)(input_features=torch.tensor(feats), labels=torch.tensor(labels))
    ours = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)(input_features=feats, labels=labels)
    np.testing.assert_allclose(ours.encoder_last_hidden_state, ref.encoder_last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.logits, ref.logits.numpy(), atol=1e-4)
    assert abs(float(ours.loss) - float(ref.loss)) <= 1e-5


def test_cached_decoding_matches_full_pass(tiny_whisper):
    """Step-by-step decoding through the cache (cross-attention K/V computed once) equals HF's full pass."""
    import torch
    from mindformers_hf.models.whisper import WhisperForConditionalGeneration

    feats = features(batch=1)
    ids = np.array([[3, 11, 40, 41, 6]], np.int64)
    with torch.no_grad():
        ref = hf_model(tiny_whisper)(input_features=torch.tensor(feats), decoder_input_ids=torch.tensor(ids)).logits
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    out = model(input_features=feats, decoder_input_ids=ids[:, :2], use_cache=True)
    steps = [out.logits]
    cache, encoded = out.past_key_values, (out.encoder_last_hidden_state,)
    for t in range(2, ids.shape[1]):
        out = model(encoder_outputs=encoded, decoder_input_ids=ids[:, t:t + 1], past_key_values=cache,
                    use_cache=True)
        cache = out.past_key_values
        steps.append(out.logits)
    np.testing.assert_allclose(np.concatenate(steps, 1), ref.numpy(), atol=1e-4)


def test_base_model_matches_hf(tiny_whisper):
    import torch
    from mindformers_hf.models.whisper import WhisperModel

    feats, ids = features(), np.array([[3, 4, 5], [3, 60, 61]], np.int64)
    with torch.no_grad():
        ref = hf_model(tiny_whisper, "WhisperModel")(input_features=torch.tensor(feats),
                                                      decoder_input_ids=torch.tensor(ids))
    ours = WhisperModel.from_pretrained(tiny_whisper)(input_features=feats, decoder_input_ids=ids)
    np.testing.assert_allclose(ours.last_hidden_state, ref.last_hidden_state.numpy(), atol=1e-4)


def test_save_pretrained_reloads_in_hf(tiny_whisper, tmp_path):
    import torch
    from mindformers_hf.models.whisper import WhisperForConditionalGeneration

    WhisperForConditionalGeneration.from_pretrained(tiny_whisper).save_pretrained(tmp_path)
    feats, ids = features(batch=1), np.array([[3, 12, 13]], np.int64)
    with torch.no_grad():
        a = hf_model(tiny_whisper)(input_features=torch.tensor(feats), decoder_input_ids=torch.tensor(ids)).logits
        b = hf_model(str(tmp_path))(input_features=torch.tensor(feats), decoder_input_ids=torch.tensor(ids)).logits
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_wrong_feature_length_is_a_clear_error(tiny_whisper):
    from mindformers_hf.models.whisper import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    with pytest.raises(ValueError, match="mel input features to be of length 32"):
        model(input_features=features(frames=30), decoder_input_ids=np.array([[3]], np.int64))


def test_loss_gradients_match_hf(tiny_whisper):
    """Every trainable parameter's gradient of the `labels` loss equals torch's (the fine-tuning building block).
    The encoder's sinusoidal `embed_positions` stays frozen here, as transformers' constructor makes it; its
    from_pretrained leaves it trainable (docs/differences.md)."""
    import mindspore as ms
    import torch
    from mindformers_hf.models.whisper import WhisperForConditionalGeneration

    feats = features()
    labels = np.array([[5, 9, 17, 33, 2, -100], [7, 8, 90, 2, -100, -100]], np.int64)
    hf = hf_model(tiny_whisper)
    hf(input_features=torch.tensor(feats), labels=torch.tensor(labels)).loss.backward()
    expected = {name: p.grad.numpy() for name, p in hf.named_parameters() if p.requires_grad}

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    params = model.trainable_params()
    grad_fn = ms.value_and_grad(lambda x, y: model.construct(input_features=x, labels=y).loss, None, params)
    _, grads = grad_fn(ms.Tensor(feats), ms.Tensor(labels))
    got = {p.name: g.asnumpy() for p, g in zip(params, grads)}
    frozen_here = {"model.encoder.embed_positions.weight"}
    assert set(got) == set(expected) - {"proj_out.weight"} - frozen_here  # tied: the head is the decoder embedding
    for name, grad in got.items():
        np.testing.assert_allclose(grad, expected[name], atol=1e-5, rtol=1e-4, err_msg=name)
