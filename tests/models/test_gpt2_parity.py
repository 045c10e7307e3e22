"""GPT-2 parity against HF transformers (torch, fp32, CPU) on tiny random checkpoints HF itself wrote."""
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from mindformers_hf import AutoModel, AutoModelForCausalLM
from mindformers_hf.safetensors_io import SafetensorsFile
from tests.conftest import batch, hf_forward
from tests.models.family_parity import assert_family_parity

# initializer_range 0.2 (not 0.02) puts pre-activations and attention scores at O(1), where the GELU
# forms and the attention scaling options differ measurably
TINY_GPT2 = dict(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
                 initializer_range=0.2)


def make_gpt2_checkpoint(folder, seed=0, **overrides):
    """GPT2LMHeadModel saved by transformers, with random LayerNorm weights and biases (not ones and zeros)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**TINY_GPT2, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return str(folder)


VARIANTS = {  # the tied default is the family matrix's row (tests/models/matrix.py)
    "untied": dict(tie_word_embeddings=False),
    # layer-scaled attention, a narrow MLP and the exact (erf) GELU
    "options": dict(scale_attn_by_inverse_layer_idx=True, n_inner=96, activation_function="gelu"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gpt2_matches_hf(tmp_path, variant):
    folder = make_gpt2_checkpoint(tmp_path / "hf", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "GPT2LMHeadModel")
    names = {name for name, _ in ours.named_parameters()}
    assert ("lm_head.weight" in names) == (variant == "untied")
    assert tuple(ours.transformer.h[0].attn.c_attn.weight.shape) == (64, 192)  # Conv1D: [in, out]


def test_gpt2_openai_layout_checkpoint(tmp_path):
    """openai-community/gpt2's file: keys without `transformer.`, plus `attn.bias` causal-mask buffers."""
    folder = make_gpt2_checkpoint(tmp_path / "hf")
    path = os.path.join(folder, "model.safetensors")
    reader = SafetensorsFile(path)
    tensors = {key[len("transformer."):]: np.array(reader.get(key)) for key in reader.keys()}
    reader.close()
    tensors["h.0.attn.bias"] = np.tril(np.ones((64, 64), np.float32)).reshape(1, 1, 64, 64)
    tensors["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, path, {"format": "pt"})

    ids, mask = batch(pad_left=(0, 3))
    got = AutoModelForCausalLM.from_pretrained(folder)(input_ids=ids, attention_mask=mask).logits
    want = hf_forward(folder, ids, mask).logits.numpy()
    assert np.abs(got - want)[mask.astype(bool)].max() <= 1e-4


def test_gpt2_base_model_and_hidden_states(tmp_path):
    folder = make_gpt2_checkpoint(tmp_path / "hf")
    ids, _ = batch(pad_left=(0, 0))
    base = AutoModel.from_pretrained(folder)
    assert type(base).__name__ == "GPT2Model"
    got = base(input_ids=ids, output_hidden_states=True).hidden_states
    want = hf_forward(folder, ids, model_class="AutoModel", output_hidden_states=True).hidden_states
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert np.abs(g - w.numpy()).max() <= 1e-4


def test_gpt2_dropout_in_train_mode_only(tmp_path):
    folder = make_gpt2_checkpoint(tmp_path / "hf", resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.1)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ids, _ = batch(pad_left=(0, 0))
    eval_logits = ours(input_ids=ids).logits
    np.testing.assert_array_equal(eval_logits, ours(input_ids=ids).logits)
    ours.train()
    first, second = ours(input_ids=ids).logits, ours(input_ids=ids).logits
    assert np.abs(first - second).max() > 1e-3 and np.abs(first - eval_logits).max() > 1e-3
