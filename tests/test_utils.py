"""utils.set_seed: the one seeding function behind every public `set_seed` name."""
import subprocess
import sys

import numpy as np

import mindformers_hf
from mindformers_hf import generation, trainer, utils
from tests.conftest import batch


def test_every_set_seed_name_is_the_same_function():
    assert mindformers_hf.set_seed is utils.set_seed
    assert generation.set_seed is utils.set_seed
    assert trainer.set_seed is utils.set_seed


def test_sampling_repeats_with_the_same_seed_through_either_name(tiny_llama):
    model = mindformers_hf.AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids, mask = batch(rows=2, length=7, pad_left=(0, 2), seed=5)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=True, temperature=2.0)
    mindformers_hf.set_seed(11)
    first = model.generate(**kwargs)
    generation.set_seed(11)
    second = model.generate(**kwargs)
    generation.set_seed(12)
    third = model.generate(**kwargs)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


def test_seeds_torch_only_when_already_imported():
    code = ("import sys; import mindformers_hf; mindformers_hf.set_seed(3); assert 'torch' not in sys.modules; "
            "import torch; mindformers_hf.set_seed(3); a = torch.rand(4); mindformers_hf.set_seed(3); "
            "assert torch.equal(a, torch.rand(4)); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
