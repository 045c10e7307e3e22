"""Checkpoint formats that on the Hub need trust_remote_code, loaded natively: InternLM (v1), InternLM2,
Baichuan2 7B (rotary) and 13B (ALiBi), ChatGLM2/3, Qwen v1.

The writers (tests/models/remote_formats.py) build a random HF-native model with transformers (torch) and write
the remote-format checkpoint from it by applying the inverse of a published conversion. The default case of each
format (load, forward parity against the HF-native model, generate) is a row of the family matrix
(tests/models/matrix.py, tests/models/test_family_matrix.py); this file holds the variants and the loading rules.
"""
import json
import os

import numpy as np
import pytest

from mindformers_hf import AutoConfig, AutoModelForCausalLM
from tests.models import remote_formats
from tests.models.remote_formats import (  # noqa: F401 (re-exported: tests/parallel uses the writers)
    VOCAB, _auto_map, _baichuan_checkpoint, alibi_llama, baichuan_checkpoint, chatglm_checkpoint, hf_forward,
    hf_native, hf_reference, internlm2_checkpoint, internlm_checkpoint, qwen_checkpoint, write_remote)


def baichuan_alibi_checkpoint(folder, **overrides):
    """A Baichuan2-13B-format folder (ALiBi, NormHead): (folder, arrays, reference(ids, mask, labels)), the
    reference being transformers' LLaMA with Baichuan's ALiBi attention (remote_formats.alibi_llama)."""
    folder, arrays, hf = remote_formats.baichuan_alibi_checkpoint(folder, **overrides)
    return folder, arrays, hf_reference(alibi_llama(hf))


# ------------------------------------------------------------------------------------------------ Baichuan2
def test_decode_step_that_cannot_be_traced_falls_back_without_crashing(tmp_path, tiny_llama):
    """Baichuan-13B's ALiBi decode step fails MindSpore's trace; closing the broken trace used to segfault the
    process (exit 139). generate must fall back to op-by-op with the eager result, and a later model's decode
    step must still compile."""
    from mindformers_hf.generation.runner import StaticRunner

    hf = hf_native("LlamaConfig", "LlamaForCausalLM", hidden_size=32, num_attention_heads=4, num_key_value_heads=4)
    folder, _ = _baichuan_checkpoint(hf, tmp_path / "baichuan_alibi", "alibi")
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = np.array([[5, 6, 7, 8]])
    got = model.generate(prompt, max_new_tokens=5, do_sample=False)
    np.testing.assert_array_equal(got, model.generate(prompt, max_new_tokens=5, do_sample=False,
                                                      disable_compile=True))
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama)
    llama.generate(prompt, max_new_tokens=3, do_sample=False)
    graphs = [graph for graph in llama.__dict__.get("_mindformers_decode_graphs", []) if graph.key[2]]
    assert graphs and all(graph.step.compiled for graph in graphs) and StaticRunner.supports(llama)


def test_baichuan_config_rules():
    """Released Baichuan configs do not say rotary vs ALiBi or NormHead: vLLM's rules decide."""
    from mindformers_hf.models.baichuan import BaichuanConfig, alibi_slopes

    assert BaichuanConfig(hidden_size=4096, vocab_size=125696).position_embedding == "rope"
    assert BaichuanConfig(hidden_size=5120, vocab_size=125696).position_embedding == "alibi"
    assert BaichuanConfig(hidden_size=4096, vocab_size=125696).norm_head
    assert not BaichuanConfig(hidden_size=4096, vocab_size=64000).norm_head
    # ALiBi slopes against transformers' Bloom implementation, 40 heads as Baichuan2-13B
    import torch
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    bloom = build_alibi_tensor(torch.tensor([[1, 1]]), 40, torch.float32)[:, 0, 1].numpy()  # slope * position 1
    np.testing.assert_allclose(alibi_slopes(40), bloom, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ ChatGLM
def test_chatglm_v1_and_unsupported_options_raise(tmp_path):
    from mindformers_hf.models.chatglm import ChatGLMConfig

    with pytest.raises(NotImplementedError, match="ChatGLM-6B .*first generation"):
        ChatGLMConfig.from_dict({"position_encoding_2d": True, "inner_hidden_size": 16384})
    with pytest.raises(NotImplementedError, match="quantization_bit=4"):
        ChatGLMConfig.from_dict({"quantization_bit": 4})


# ------------------------------------------------------------------------------------------------ loading rules
def test_remote_format_loads_without_trust_remote_code(tmp_path):
    """A folder whose config names remote code (auto_map) of a format we implement loads natively, says so
    once, and AutoConfig returns our config class; InternLM2 weights under model_type "internlm" (as some
    repos ship them) are recognised by their architecture."""
    from mindformers_hf import utils

    hf = hf_native("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=4)
    config = {"architectures": ["InternLMForCausalLM"], "model_type": "internlm", "bias": False,
              "auto_map": _auto_map("configuration_internlm", "modeling_internlm", "InternLMConfig",
                                    "InternLMForCausalLM"),
              "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "rms_norm_eps": hf.config.rms_norm_eps, "tie_word_embeddings": False}
    folder, _ = write_remote(tmp_path / "m", config, dict(hf.named_parameters()))
    model = AutoModelForCausalLM.from_pretrained(folder)  # no trust_remote_code
    assert type(model).__name__ == "InternLMForCausalLM"
    said = [m for m in utils._warned if folder in m and "never executed" in m]
    assert len(said) == 1 and "'internlm' format natively" in said[0]
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "InternLMConfig"
    assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "InternLMConfig"

    with open(os.path.join(folder, "config.json")) as f:
        data = json.load(f)
    data["architectures"] = ["InternLM2ForCausalLM"]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(data, f)
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "InternLM2Config"
