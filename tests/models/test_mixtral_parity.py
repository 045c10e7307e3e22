"""Mixtral parity against HF transformers (torch, fp32, CPU) on tiny random checkpoints HF itself wrote.

Also holds the router-loss check the other MoE families reuse: with output_router_logits=True and labels,
HF adds router_aux_loss_coef * load_balancing_loss to the LM loss.
"""
import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.modeling_utils import find_checkpoint_files
from mindformers_hf.weight_loading import iter_safetensors as _iter_safetensors
from mindformers_hf.safetensors_io import CheckpointError
from tests.conftest import batch, make_hf_checkpoint
from tests.models.family_parity import hf_call, hf_model

MIXTRAL = dict(num_local_experts=8, num_experts_per_tok=2, router_aux_loss_coef=0.02)


def assert_router_loss_parity(folder, ours=None, vocab=128):
    """Loss with the auxiliary router loss, the aux loss itself and each MoE layer's router logits, against HF."""
    import torch

    ours = ours or AutoModelForCausalLM.from_pretrained(folder)
    theirs = hf_model(folder)
    # right padding: with left padding the first label is predicted from a padded (undefined) position
    ids, mask = batch(vocab, pad_left=(0, 0), seed=2)
    mask[1, -4:] = 0
    labels = np.where(mask == 1, ids, -100)
    got = ours(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    with torch.no_grad():
        want = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels),
                      output_router_logits=True)
    assert want.aux_loss is not None and got.aux_loss is not None
    assert abs(float(got.aux_loss) - float(want.aux_loss)) <= 1e-5 * abs(float(want.aux_loss))
    assert abs(float(got.loss) - float(want.loss)) <= 1e-5 * abs(float(want.loss))
    plain = float(hf_call(theirs, ids, mask, labels).loss)
    assert float(want.loss) != plain  # the coefficient really entered the loss being compared
    assert len(got.router_logits) == len(want.router_logits) > 0
    valid = mask.reshape(-1).astype(bool)
    for g, w in zip(got.router_logits, want.router_logits):
        assert np.abs(np.asarray(g) - w.numpy())[valid].max() <= 1e-4
    # no router logits unless asked, as in HF
    assert ours(input_ids=ids, attention_mask=mask).router_logits is None
    return ours


def router_loss_check(ours, folder, hf_folder):
    """The family matrix's extra forward check of the MoE rows (tests/models/matrix.py)."""
    assert_router_loss_parity(folder, ours)


def test_mixtral_stacked_checkpoint_and_sliding_window(tmp_path):
    """HF's save_original_format=False writes the stacked names: they load as they are."""
    folder = make_hf_checkpoint(tmp_path / "hf", "MixtralConfig", "MixtralForCausalLM", sliding_window=5,
                                save_kwargs={"save_original_format": False}, **MIXTRAL)
    assert "model.layers.0.mlp.experts.gate_up_proj" in {k for k, *_ in _iter_safetensors(find_checkpoint_files(folder))}
    ids, mask = batch(pad_left=(0, 2))
    got = AutoModelForCausalLM.from_pretrained(folder)(input_ids=ids, attention_mask=mask).logits
    want = hf_call(hf_model(folder), ids, mask).logits.numpy()
    assert np.abs(got - want)[mask.astype(bool)].max() <= 1e-4


def test_missing_expert_tensor_is_named(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "hf", "MixtralConfig", "MixtralForCausalLM", **MIXTRAL)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for drop in ("model.layers.1.block_sparse_moe.experts.5.w3.weight",   # half of a gate_up block
                 "model.layers.0.block_sparse_moe.experts.7.w2.weight"):  # a down_proj
        source = (entry for entry in _iter_safetensors(find_checkpoint_files(folder)) if entry[0] != drop)
        with pytest.raises(CheckpointError, match=rf"experts \[{drop.split('.')[5]}\] are incomplete"):
            model.load_weights(source)
