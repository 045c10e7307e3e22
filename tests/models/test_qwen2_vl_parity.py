"""Qwen2-VL and Qwen2.5-VL against HF transformers (torch, fp32, CPU) on tiny checkpoints HF writes in the test:
vision features, logits with images (and padding), greedy and beam generate (M-RoPE positions and rope_deltas in
decoding), videos, `get_rope_index`, and the two checkpoint layouts (published names and transformers 5's module
paths).

Tolerances: 1e-5 on vision features, 1e-4 on logits (both fp32; different kernels, so not bit for bit).
"""
import numpy as np
import pytest

from .qwen2_vl_fixtures import hf_model, image_batch, make_qwen2_vl_checkpoint, torch_inputs, video_batch

TYPES = ("qwen2_vl", "qwen2_5_vl")


@pytest.fixture(scope="module", params=TYPES)
def checkpoint(request, tmp_path_factory):
    """(model_type, folder, HF model, our model) -- built once per model type for this file."""
    from mindformers_hf import AutoModelForImageTextToText

    folder = make_qwen2_vl_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, folder, hf_model(folder), AutoModelForImageTextToText.from_pretrained(folder)


def test_auto_classes_build_the_family_classes(checkpoint):
    """AutoModelForImageTextToText and AutoModel build transformers' classes; the base model's states equal HF's."""
    import torch
    import transformers

    import mindformers_hf

    _, folder, hf, ours = checkpoint
    assert type(ours).__name__ == type(hf).__name__
    assert type(ours) is getattr(mindformers_hf, type(hf).__name__)
    hf_base = transformers.AutoModel.from_pretrained(folder).eval()
    base = mindformers_hf.AutoModel.from_pretrained(folder)
    assert type(base).__name__ == type(hf_base).__name__
    inputs = image_batch()
    with torch.no_grad():
        ref = hf_base(**torch_inputs(inputs)).last_hidden_state.numpy()
    keep = inputs["attention_mask"].astype(bool)
    assert np.abs(base(**inputs).last_hidden_state[keep] - ref[keep]).max() <= 1e-4


def test_image_features_logits_and_greedy_tokens_equal_hf(checkpoint):
    import torch

    _, _, hf, ours = checkpoint
    inputs = image_batch()
    with torch.no_grad():
        ref_features = torch.cat(hf.model.get_image_features(torch.tensor(inputs["pixel_values"]),
                                                             torch.tensor(inputs["image_grid_thw"])).pooler_output)
        ref = hf(**torch_inputs(inputs)).logits.numpy()
        ref_tokens = hf.generate(**torch_inputs(inputs), max_new_tokens=6, do_sample=False).numpy()
        ref_beams = hf.generate(**torch_inputs(inputs), max_new_tokens=4, num_beams=2, num_return_sequences=2).numpy()
    features = ours.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    features = np.concatenate([f.asnumpy() for f in features.pooler_output])
    np.testing.assert_allclose(features, ref_features.numpy(), atol=1e-5, rtol=0)
    logits = ours(**inputs).logits
    keep = inputs["attention_mask"].astype(bool)
    assert np.abs(logits[keep] - ref[keep]).max() <= 1e-4
    tokens = ours.generate(**inputs, max_new_tokens=6, do_sample=False)
    np.testing.assert_array_equal(np.asarray(tokens), ref_tokens)
    # beams repeat and reorder each row's rope_deltas with its cache rows
    beams = ours.generate(**inputs, max_new_tokens=4, num_beams=2, num_return_sequences=2)
    np.testing.assert_array_equal(np.asarray(beams), ref_beams)


def test_videos_and_rope_index_equal_hf(checkpoint):
    import torch

    model_type, _, hf, ours = checkpoint
    inputs = video_batch(model_type)
    index_keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
    with torch.no_grad():
        ref = hf(**torch_inputs(inputs)).logits.numpy()
        ref_positions, ref_deltas = hf.model.get_rope_index(**torch_inputs({k: v for k, v in inputs.items()
                                                                            if k in index_keys}))
    positions, deltas = ours.model.get_rope_index(**{k: v for k, v in inputs.items() if k in index_keys})
    np.testing.assert_array_equal(positions.asnumpy(), ref_positions.numpy())
    np.testing.assert_array_equal(deltas.asnumpy(), ref_deltas.numpy())
    assert np.abs(ours(**inputs).logits - ref).max() <= 1e-4


def test_transformers5_names_load_and_our_save_reloads_in_hf(checkpoint, tmp_path):
    """A checkpoint under transformers 5's module paths (model.visual.*, model.language_model.*) loads as the
    published one does; our save_pretrained writes the published names, which HF reloads to the same logits."""
    import torch
    from safetensors.numpy import save_file

    from mindformers_hf import AutoModelForImageTextToText

    _, folder, hf, ours = checkpoint
    inputs = image_batch()
    with torch.no_grad():
        ref = hf(**torch_inputs(inputs)).logits.numpy()
    v5 = tmp_path / "v5"
    v5.mkdir()
    save_file({k: v.numpy() for k, v in hf.state_dict().items()}, str(v5 / "model.safetensors"),
              metadata={"format": "pt"})
    assert any(k.startswith("model.language_model.") for k in hf.state_dict())
    (v5 / "config.json").write_text((open(f"{folder}/config.json").read()))
    keep = inputs["attention_mask"].astype(bool)
    assert np.abs(AutoModelForImageTextToText.from_pretrained(v5)(**inputs).logits[keep] - ref[keep]).max() <= 1e-4

    saved = tmp_path / "saved"
    ours.save_pretrained(saved)
    from safetensors import safe_open

    with safe_open(str(saved / "model.safetensors"), "np") as f:
        keys = set(f.keys())
    with safe_open(f"{folder}/model.safetensors", "np") as f:
        assert keys == set(f.keys())  # the published names, as HF writes them
    with torch.no_grad():
        again = hf_model(str(saved))(**torch_inputs(inputs)).logits.numpy()
    assert np.abs(again[keep] - ref[keep]).max() <= 1e-6
