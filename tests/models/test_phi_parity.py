"""Phi (Phi-2) parity against HF transformers on tiny random checkpoints HF itself wrote: parallel attention and
MLP on one LayerNorm, `dense` / fc1 / fc2 with biases, partial rotary, final_layernorm, the LM head's bias."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the default (partial_rotary_factor 0.5, gelu_new, as Phi-2) is the family matrix's row
    "full_rotary_mha": dict(num_key_value_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                    "partial_rotary_factor": 1.0}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_phi_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "PhiConfig", "PhiForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "PhiForCausalLM")
    assert ours.model.compiles_layers()


def test_phi_qk_layernorm_raises(tmp_path):
    from mindformers_hf import PhiConfig, PhiForCausalLM

    with pytest.raises(NotImplementedError, match="qk_layernorm"):
        PhiForCausalLM(PhiConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                 num_attention_heads=4, qk_layernorm=True))


def test_phi_serves_through_the_paged_cache(tmp_path):
    """Serving's engine (paged KV cache, chunked prefill) on the parallel-residual LayerNorm layer: HF's tokens."""
    import numpy as np
    import torch

    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.serving import LLM, SamplingParams
    from tests.models.family_parity import hf_model
    from tests.serving.test_engine import _IdsTokenizer

    folder = make_hf_checkpoint(tmp_path / "hf", "PhiConfig", "PhiForCausalLM")
    llm = LLM(AutoModelForCausalLM.from_pretrained(folder), _IdsTokenizer(), max_num_batched_tokens=5, block_size=4)
    prompt = np.random.default_rng(0).integers(3, 128, size=11).tolist()
    got = llm.generate([prompt], SamplingParams(max_tokens=3, temperature=0))[0].outputs[0].token_ids
    with torch.no_grad():
        want = hf_model(folder).generate(torch.tensor([prompt]), max_new_tokens=3, do_sample=False,
                                         pad_token_id=0)[0, len(prompt):].tolist()
    assert got == (want[:want.index(2) + 1] if 2 in want else want)
