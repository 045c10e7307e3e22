"""Qwen-VL (v1)'s image preprocessing, torch- and torchvision-free. Tensor-free (numpy and PIL).

The published visual.py preprocesses with torchvision on PIL images: Resize((image_size, image_size), BICUBIC) --
on a PIL image that is PIL's own `resize` with Image.BICUBIC --, ToTensor (uint8 -> float32 / 255, HWC -> CHW) and
Normalize with CLIP's mean and std ((x - mean) / std in float32). `QWenVLImageProcessor` does exactly these steps
with PIL and numpy. The published model also reads each image's path (or URL) from the token ids between <img> and
the first <imgpad> and opens it; here that is `image_paths` / `from_input_ids`, outside the model.
"""
import json
import os

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def open_image(source, timeout=None):
    """A PIL image (RGB) from a PIL image, a path or an http(s) URL, as the published `encode` opens them."""
    from PIL import Image

    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        from transformers.image_utils import load_image

        image = load_image(source, timeout=timeout)
    else:
        image = Image.open(source)
    return image.convert("RGB")


class QWenVLImageProcessor:
    """images -> {"pixel_values": float32 [n, 3, image_size, image_size]} for QWenLMHeadModel with a `visual` config."""

    model_input_names = ["pixel_values"]

    def __init__(self, image_size=448, image_start_id=None, image_mean=CLIP_MEAN, image_std=CLIP_STD):
        self.image_size = int(image_size)
        self.image_start_id = image_start_id
        self.image_mean = np.asarray(image_mean, np.float32).reshape(3, 1, 1)
        self.image_std = np.asarray(image_std, np.float32).reshape(3, 1, 1)

    @classmethod
    def from_config(cls, config):
        visual = config["visual"] if isinstance(config, dict) else getattr(config, "visual", None)
        if not visual:
            raise ValueError("QWenVLImageProcessor: the config has no `visual` section (not a Qwen-VL model)")
        return cls(visual.get("image_size", 448), visual.get("image_start_id", 151857))

    @classmethod
    def from_pretrained(cls, name, **hub_kwargs):
        """From a Qwen-VL folder or repo id: image_size and image_start_id of config.json's `visual` section."""
        if os.path.isdir(name):
            path = os.path.join(name, "config.json")
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(name, "config.json", **hub_kwargs)
        with open(path, encoding="utf-8") as f:
            return cls.from_config(json.load(f))

    def preprocess(self, image):
        """One image (PIL, path or URL) -> float32 [3, image_size, image_size]."""
        from PIL import Image

        image = open_image(image).resize((self.image_size, self.image_size), Image.BICUBIC)
        pixels = np.asarray(image, np.uint8).astype(np.float32).transpose(2, 0, 1) / np.float32(255)
        return (pixels - self.image_mean) / self.image_std

    def __call__(self, images, return_tensors=None):
        from transformers import BatchFeature

        if not isinstance(images, (list, tuple)):
            images = [images]
        pixels = np.stack([self.preprocess(image) for image in images]) if images else \
            np.zeros((0, 3, self.image_size, self.image_size), np.float32)
        if return_tensors not in (None, "np"):
            raise NotImplementedError(f"QWenVLImageProcessor: return_tensors={return_tensors!r} (use 'np'; the "
                                      "models take numpy)")
        return BatchFeature({"pixel_values": pixels}, tensor_type=None)

    def image_paths(self, input_ids):
        """The published model's reading of the ids: each <img> ... </img> span's ids up to the first <imgpad>
        (image_start_id + 2) are the bytes of the image's path or URL, in row-major order."""
        if self.image_start_id is None:
            raise ValueError("QWenVLImageProcessor: image_start_id is unknown (build it with from_pretrained)")
        start = self.image_start_id
        paths = []
        for row in np.atleast_2d(np.asarray(input_ids)):
            row = row.tolist()
            for a, token in enumerate(row):
                if token != start:
                    continue
                b = row.index(start + 1, a)
                inner = row[a + 1:b]
                inner = inner[:inner.index(start + 2)] if start + 2 in inner else inner
                paths.append(bytes(inner).decode("utf-8"))
        return paths

    def from_input_ids(self, input_ids):
        """pixel_values for the images the ids name (the published model opens them in its forward)."""
        return self(self.image_paths(input_ids))["pixel_values"]
