"""Tiny Qwen2-VL / Qwen2.5-VL checkpoints written by HF transformers' own save_pretrained, and prompts with image
and video placeholders, shared by the Qwen2-VL tests."""
import numpy as np

IMAGE, VIDEO, START, END = 151, 152, 150, 153
PATCH_DIM = 3 * 2 * 4 * 4  # channels * temporal_patch_size * patch_size^2
TEXT = dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]})
VISION = {
    "qwen2_vl": dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2),
    # windows of 16 pixels = 2 x 2 merged tokens; block 1 attends over the whole image
    "qwen2_5_vl": dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=4,
                       window_size=16, fullatt_block_indexes=[1], tokens_per_second=2),
}
CLASSES = {"qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
           "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration")}


def make_qwen2_vl_checkpoint(folder, model_type="qwen2_vl", seed=0, **overrides):
    """A random tiny model of `model_type` saved by HF. Norms and biases are randomised, and the vision qkv
    weights scaled up so that attention is far from uniform (a wrong window or frame mask shows in the output)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config_class, model_class = CLASSES[model_type]
    vision = dict(VISION[model_type], patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    config = getattr(transformers, config_class)(text_config=dict(TEXT), vision_config=vision, image_token_id=IMAGE,
                                                 video_token_id=VIDEO, vision_start_token_id=START,
                                                 vision_end_token_id=END, **overrides)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight")):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("attn.qkv.weight"):
                p.mul_(8.0)
    model.save_pretrained(folder)
    return str(folder)


def _run(rng, n):
    return list(rng.integers(3, 140, n))


def image_batch(seed=0):
    """Two left-padded rows: the first with two images (grids 4x4 and 4x8 patches -> 4 and 8 tokens), the second
    text only. Returns the model's keyword inputs as numpy."""
    rng = np.random.default_rng(seed)
    grid = np.array([[1, 4, 4], [1, 4, 8]])
    row0 = _run(rng, 3) + [START] + [IMAGE] * 4 + [END] + _run(rng, 2) + [START] + [IMAGE] * 8 + [END] + _run(rng, 2)
    row1 = _run(rng, 6)
    width = len(row0)
    ids = np.array([row0, [0] * (width - len(row1)) + row1])
    mask = np.ones_like(ids)
    mask[1, :width - len(row1)] = 0
    pixel_values = rng.standard_normal((int(grid.prod(-1).sum()), PATCH_DIM)).astype(np.float32)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, image_grid_thw=grid,
                mm_token_type_ids=(ids == IMAGE).astype(np.int64))


def video_batch(model_type, seed=1):
    """One row: a 2-frame video, an image, a 3-frame video (with second_per_grid_ts for Qwen2.5-VL)."""
    rng = np.random.default_rng(seed)
    grid, vgrid = np.array([[1, 4, 4]]), np.array([[2, 4, 4], [3, 4, 4]])
    ids = np.array([_run(rng, 2) + [START] + [VIDEO] * 8 + [END] + _run(rng, 1) + [START] + [IMAGE] * 4 + [END]
                    + _run(rng, 1) + [START] + [VIDEO] * 12 + [END] + _run(rng, 2)])
    inputs = dict(input_ids=ids, pixel_values=rng.standard_normal((16, PATCH_DIM)).astype(np.float32),
                  image_grid_thw=grid, pixel_values_videos=rng.standard_normal((80, PATCH_DIM)).astype(np.float32),
                  video_grid_thw=vgrid, mm_token_type_ids=np.where(ids == IMAGE, 1, np.where(ids == VIDEO, 2, 0)))
    if model_type == "qwen2_5_vl":
        inputs["second_per_grid_ts"] = np.array([0.5, 1.5], np.float32)
    return inputs


def hf_model(folder):
    import transformers

    return transformers.AutoModelForImageTextToText.from_pretrained(folder).eval()


def torch_inputs(inputs):
    import torch

    return {k: torch.tensor(v) for k, v in inputs.items()}
