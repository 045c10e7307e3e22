"""A StarCoder2 GGUF file (llama.cpp's names: LayerNorm weights and biases, ffn_up / ffn_down for c_fc / c_proj,
no q/k permutation) loads as HF's GGUF loader loads it: the same config and the same logits. The file is written
with `gguf` (tests/models/gguf_writer.py) from a tiny checkpoint HF wrote."""
import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from tests.conftest import batch, make_hf_checkpoint
from tests.models.family_parity import LOGITS_ATOL, hf_call
from tests.models.gguf_writer import write_gguf

pytest.importorskip("gguf")


def test_starcoder2_gguf_matches_hf_gguf_loader(tmp_path):
    import torch
    import transformers

    folder = make_hf_checkpoint(tmp_path / "hf", "Starcoder2Config", "Starcoder2ForCausalLM", norm_epsilon=1e-4)
    hf_written = transformers.Starcoder2ForCausalLM.from_pretrained(folder, dtype=torch.float32)
    write_gguf(hf_written, tmp_path / "model.gguf", "starcoder2")

    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="model.gguf",
                                                               dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert type(ours).__name__ == type(theirs).__name__ == "Starcoder2ForCausalLM"
    for field in ("norm_epsilon", "num_key_value_heads", "intermediate_size", "tie_word_embeddings", "use_bias"):
        assert getattr(ours.config, field) == getattr(theirs.config, field), field
    ids, mask = batch(128, length=11, pad_left=(0, 3))
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = hf_call(theirs, ids, mask).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(got - want)[valid].max() <= LOGITS_ATOL
    # and both equal the safetensors checkpoint the file was written from
    assert np.abs(got - hf_call(hf_written.eval(), ids, mask).logits.numpy())[valid].max() <= LOGITS_ATOL
