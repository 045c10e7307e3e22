"""Qwen2-VL's processor without torch: `mindformers_hf.AutoProcessor` on a folder shaped as a Hub repo (tokenizer,
preprocessor_config.json, chat_template.json), run in a subprocess where torch cannot be imported, gives the same
arrays as HF's Qwen2VLProcessor (built here, with torch) -- for a batch of texts with images and for
`apply_chat_template(tokenize=True, return_dict=True, return_tensors="np")` on messages with an image -- and
those inputs drive our model to HF's greedy tokens."""
import os
import subprocess
import sys

import numpy as np
import pytest

from .qwen2_vl_fixtures import (CHAT_TEMPLATE, hf_model, image, make_processor_checkpoint, tolerant_processor_class_check,
                                torch_inputs)

TEXTS = ["hi <|vision_start|><|image_pad|><|vision_end|> there", "b <|vision_start|><|image_pad|><|vision_end|>"]
MESSAGES_CODE = ("[{'role': 'user', 'content': [{'type': 'image', 'image': image()}, "
                 "{'type': 'text', 'text': 'Describe.'}]}]")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_processor_checkpoint(tmp_path_factory.mktemp("qwen2_vl_processor"))


def hf_processor(folder):
    import transformers

    with tolerant_processor_class_check():  # (transformers' AutoProcessor needs torchvision for the video side)
        return transformers.Qwen2VLProcessor(
            image_processor=transformers.Qwen2VLImageProcessorPil.from_pretrained(folder),
            tokenizer=transformers.AutoTokenizer.from_pretrained(folder), chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def ours_without_torch(folder, tmp_path_factory):
    """Our AutoProcessor's outputs, computed in a process where `import torch` fails: {name: array}."""
    out = tmp_path_factory.mktemp("arrays") / "ours.npz"
    code = (
        "import sys\nsys.modules['torch'] = None\nsys.modules['torchvision'] = None\n"
        "import numpy as np\n"
        "from mindformers_hf import AutoProcessor\n"
        "from tests.models.qwen2_vl_fixtures import image\n"
        f"p = AutoProcessor.from_pretrained({folder!r})\n"
        f"batch = p(text={TEXTS!r}, images=[image(0), image(1, (20, 36))], padding=True, return_tensors='np')\n"
        f"chat = p.apply_chat_template({MESSAGES_CODE}, add_generation_prompt=True, tokenize=True, "
        "return_dict=True, return_tensors='np')\n"
        "arrays = {**{'batch_' + k: v for k, v in batch.items()}, **{'chat_' + k: v for k, v in chat.items()}}\n"
        f"np.savez({str(out)!r}, **arrays)\n"
        "print(type(p).__name__, type(p.image_processor).__name__)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root] + sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["Qwen2VLProcessor", "Qwen2VLImageProcessorPil"], result.stdout
    return dict(np.load(out))


def test_processor_without_torch_equals_hf(folder, ours_without_torch):
    processor = hf_processor(folder)
    batch = processor(text=TEXTS, images=[image(0), image(1, (20, 36))], padding=True, return_tensors="np")
    chat = processor.apply_chat_template(eval(MESSAGES_CODE), add_generation_prompt=True, tokenize=True,
                                         return_dict=True, return_tensors="np")
    expected = {**{"batch_" + k: v for k, v in batch.items()}, **{"chat_" + k: v for k, v in chat.items()}}
    assert set(ours_without_torch) == set(expected)
    assert {"batch_mm_token_type_ids", "chat_pixel_values", "chat_image_grid_thw"} <= set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(ours_without_torch[key], value, err_msg=key)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grid = expected["chat_image_grid_thw"]
    assert (expected["chat_input_ids"] == image_pad).sum() == grid.prod() // 4  # one pad per merged patch


def test_chat_template_inputs_generate_hf_tokens(folder, ours_without_torch):
    """The processor's dict goes straight into generate (numpy in, numpy out) and gives HF's greedy tokens."""
    import torch

    from mindformers_hf import AutoModelForImageTextToText

    inputs = {k[len("chat_"):]: v for k, v in ours_without_torch.items() if k.startswith("chat_")}
    with torch.no_grad():
        expected = hf_model(folder).generate(**torch_inputs(inputs), max_new_tokens=5, do_sample=False).numpy()
    tokens = AutoModelForImageTextToText.from_pretrained(folder).generate(**inputs, max_new_tokens=5,
                                                                           do_sample=False)
    np.testing.assert_array_equal(np.asarray(tokens), expected)
