"""LLaMA parity against HF transformers (torch, fp32, CPU) on tiny random checkpoints HF itself wrote."""
import json
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from tests.conftest import batch, edit_json, hf_forward, make_hf_checkpoint

VARIANTS = {  # the default (GQA) case is the family matrix's row (tests/models/matrix.py)
    "mha": dict(num_key_value_heads=4),
    "mqa": dict(num_key_value_heads=1),
    "tied": dict(tie_word_embeddings=True),
    "bias_and_head_dim": dict(attention_bias=True, mlp_bias=True, head_dim=24),
    "rope_linear": dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    # max_position_embeddings below the prompt length, so the dynamic rescaling really happens
    "rope_dynamic": dict(max_position_embeddings=8,
                         rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}),
    "rope_llama3": dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                         "rope_theta": 500000.0}),
    "rope_yarn": dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                                       "rope_theta": 10000.0}),
    "bf16_file": dict(hf_dtype="bfloat16"),
    "sharded": dict(save_kwargs={"max_shard_size": "30KB"}),
}


def _assert_parity(folder, **load_kwargs):
    ids, mask = batch(pad_left=(0, 3))
    ours = AutoModelForCausalLM.from_pretrained(folder, **load_kwargs)
    theirs = hf_forward(folder, ids, mask)
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = theirs.logits.numpy()
    valid = mask.astype(bool)  # padded query rows are implementation-defined in HF itself (eager != sdpa)
    assert np.abs(got - want)[valid].max() <= 1e-4
    assert (got.argmax(-1)[valid] == want.argmax(-1)[valid]).all()

    # loss with right padding and -100 labels, as HF's causal-LM collator produces
    ids_r, mask_r = batch(pad_left=(0, 0), seed=1)
    mask_r[1, -4:] = 0
    labels = np.where(mask_r == 1, ids_r, -100)
    got_loss = float(ours(input_ids=ids_r, attention_mask=mask_r, labels=labels).loss)
    want_loss = float(hf_forward(folder, ids_r, mask_r, labels).loss)
    assert abs(got_loss - want_loss) <= 1e-5 * abs(want_loss)
    return ours


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_llama_logits_and_loss_match_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / variant, **VARIANTS[variant])
    if variant == "sharded":
        assert os.path.isfile(os.path.join(folder, "model.safetensors.index.json"))
    _assert_parity(folder)


def test_v4_style_config(tmp_path):
    """A transformers-4 config.json: torch_dtype, rope_theta and rope_scaling with the old `type` key."""
    folder = make_hf_checkpoint(tmp_path / "v4")
    config_path = os.path.join(folder, "config.json")
    edit_json(config_path, dtype=None, rope_parameters=None, torch_dtype="float32", rope_theta=20000.0,
              rope_scaling={"type": "linear", "factor": 2.0}, transformers_version="4.44.0")
    with open(config_path) as f:
        assert "rope_parameters" not in json.load(f)
    ours = _assert_parity(folder)
    assert ours.model.rotary_emb.rope_type == "linear"


def test_hidden_states_match_hf(tiny_llama):
    ids, mask = batch(pad_left=(0, 0))
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    got = ours(input_ids=ids, output_hidden_states=True).hidden_states
    want = hf_forward(tiny_llama, ids, output_hidden_states=True).hidden_states
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert np.abs(g - w.numpy()).max() <= 1e-4
