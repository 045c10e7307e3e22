"""gpt-oss parity against HF transformers on tiny random checkpoints HF itself wrote: attention sinks, sliding
layers alternating with full ones (window 4 under an 11-token prompt), YaRN rotary, the biased router and the
clamped-SwiGLU experts (a small limit so the clamps bite), the router's load-balancing loss."""
import numpy as np
import pytest

from tests.conftest import batch, make_hf_checkpoint
from tests.models.family_parity import assert_family_parity, assert_generate_matches_hf, hf_call, hf_model

GPT_OSS = dict(head_dim=16, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
               swiglu_limit=0.1,
               rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "beta_fast": 32.0,
                                "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 16})


def _randomize(folder):
    """HF initialises expert biases to zero: give them values so a dropped bias shows."""
    import torch
    from safetensors.torch import load_file, save_file

    path = f"{folder}/model.safetensors"
    tensors = load_file(path)
    generator = torch.Generator().manual_seed(1)
    for name, tensor in tensors.items():
        if name.endswith("_bias"):
            tensors[name] = 0.1 * torch.randn(tensor.shape, generator=generator)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def gpt_oss_folder(tmp_path_factory):
    folder = make_hf_checkpoint(tmp_path_factory.mktemp("gpt_oss"), "GptOssConfig", "GptOssForCausalLM", **GPT_OSS)
    _randomize(folder)
    return folder


def test_gpt_oss_matches_hf(gpt_oss_folder, tmp_path):
    ours = assert_family_parity(gpt_oss_folder, tmp_path / "ours", "GptOssForCausalLM")
    assert [layer.attention_type for layer in ours.model.layers] == ["sliding_attention", "full_attention"]
    assert_generate_matches_hf(gpt_oss_folder, ours)

    # the router's load-balancing loss and the total loss with output_router_logits, as HF's
    import torch

    ids, mask = batch(128, length=9, pad_left=(0, 3), seed=2)
    got = ours(input_ids=ids, attention_mask=mask, labels=ids, output_router_logits=True)
    with torch.no_grad():
        want = hf_model(gpt_oss_folder)(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                        labels=torch.tensor(ids), output_router_logits=True)
    np.testing.assert_allclose(float(got.aux_loss), float(want.aux_loss), rtol=1e-5)
    np.testing.assert_allclose(float(got.loss), float(want.loss), rtol=1e-5)
    assert len(got.router_logits) == 2
    np.testing.assert_allclose(np.asarray(got.router_logits[0]), want.router_logits[0].numpy(), atol=1e-5)


def test_gpt_oss_refuses_serving_paged_cache_by_name(gpt_oss_folder):
    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.serving import LLM, SamplingParams
    from tests.serving.test_engine import _IdsTokenizer

    llm = LLM(AutoModelForCausalLM.from_pretrained(gpt_oss_folder), _IdsTokenizer(), block_size=4)
    with pytest.raises(NotImplementedError, match="attention sinks"):
        llm.generate([[5, 6, 7]], SamplingParams(max_tokens=2, temperature=0))
