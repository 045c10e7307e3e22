"""Tiny Qwen2-VL / Qwen2.5-VL checkpoints written by HF transformers' own save_pretrained, and prompts with image
and video placeholders, shared by the Qwen2-VL tests."""
import contextlib
import json

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


def make_qwen2_vl_checkpoint(folder, model_type="qwen2_vl", seed=0, text=None, **overrides):
    """A random tiny model of `model_type` saved by HF. Norms and biases are randomised, and the vision qkv
    weights scaled up so that attention is far from uniform (a wrong window or frame mask shows in the output)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config_class, model_class = CLASSES[model_type]
    vision = dict(VISION[model_type], patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
    config = getattr(transformers, config_class)(text_config={**TEXT, **(text or {})}, vision_config=vision,
                                                 **{**ids, **overrides})
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


# ---------------------------------------------------------------------------------------------- processor
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]  # ids 256..262, after the 256 byte tokens
PROCESSOR_IDS = dict(image_token_id=261, video_token_id=262, vision_start_token_id=259, vision_end_token_id=260)
PROCESSOR_TEXT = dict(vocab_size=264, bos_token_id=256, eos_token_id=258, pad_token_id=256)  # <|im_end|> ends
# Qwen2-VL-Instruct's chat template (Qwen/Qwen2-VL-7B-Instruct, chat_template.json)
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")


@contextlib.contextmanager
def tolerant_processor_class_check():
    """transformers 5.25 cannot build any processor with a tokenizer when torchvision is missing: its class check
    looks the tokenizer's alternative base class (MistralCommonBackend) up in VIDEO_PROCESSOR_MAPPING, a placeholder
    without `_extra_content` then. Inside this block a sub-processor's class check accepts it when it is an
    instance of the classes that do import (what the check means)."""
    from transformers import processing_utils

    original = processing_utils.ProcessorMixin.get_possibly_dynamic_module

    def lookup(name):
        try:
            return original(name)
        except AttributeError:
            return type(None)  # an alternative class that is not installed: nothing is an instance of it

    processing_utils.ProcessorMixin.get_possibly_dynamic_module = staticmethod(lookup)
    try:
        yield
    finally:
        processing_utils.ProcessorMixin.get_possibly_dynamic_module = staticmethod(original)


def write_processor(folder):
    """A byte-level BPE tokenizer (256 byte tokens, no merges, Qwen's special tokens) and Qwen2VLProcessor's
    files, written by transformers."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == PROCESSOR_IDS["image_token_id"]
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (PROCESSOR_TEXT["eos_token_id"],
                                                                 PROCESSOR_TEXT["pad_token_id"])
    sizes = dict(min_pixels=16 * 16, max_pixels=32 * 32, patch_size=4, merge_size=2, temporal_patch_size=2)
    # the files of a Hub repo (Qwen/Qwen2-VL-2B-Instruct): tokenizer, preprocessor_config.json, chat_template.json;
    # no video processor (transformers' needs torchvision)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    image_processor = transformers.Qwen2VLImageProcessorPil(**sizes)
    image_processor.processor_class = "Qwen2VLProcessor"
    image_processor.save_pretrained(folder)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    return str(folder)


def make_processor_checkpoint(folder, model_type="qwen2_vl"):
    """A tiny model whose vocabulary and special ids are the tokenizer's, with the processor's files beside it."""
    make_qwen2_vl_checkpoint(folder, model_type, text=PROCESSOR_TEXT, **PROCESSOR_IDS)
    return write_processor(folder)


def image(seed=0, size=(28, 40)):
    from PIL import Image

    pixels = (np.random.default_rng(seed).random(size + (3,)) * 255).astype(np.uint8)
    return Image.fromarray(pixels)
