"""Gemma 2 and Gemma 3 text GGUF files (llama.cpp's names, norms stored as 1 + w) load as HF's GGUF loader
loads them: the same config and the same logits. The file is written with `gguf` from a tiny checkpoint HF wrote."""
import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from mindformers_hf.safetensors_io import CheckpointError
from tests.conftest import batch, make_hf_checkpoint
from tests.models.family_parity import LOGITS_ATOL, hf_call

gguf = pytest.importorskip("gguf")

_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
          "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "post_attention_norm",
          "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
CASES = {"gemma2": ("Gemma2Config", "Gemma2ForCausalLM"), "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM")}


def _gguf_name(hf_name):
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module, _, kind = rest.rpartition(".")
    return f"blk.{layer}.{_LAYER[module]}.{kind}"


def write_gguf(hf_model, path, arch):
    """What llama.cpp's converter writes for these tensors (unquantised), with its Gemma norm convention."""
    config = hf_model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_embedding_length(config.hidden_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_sliding_window(config.sliding_window)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(config.vocab_size)
    for name, tensor in hf_model.state_dict().items():
        if name == "lm_head.weight":  # tied: llama.cpp writes no output tensor
            continue
        array = tensor.numpy().astype(np.float32)
        if name.endswith("norm.weight"):
            array = array + np.float32(1)
        writer.add_tensor(_gguf_name(name), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch", sorted(CASES))
def test_gemma_gguf_matches_hf_gguf_loader(tmp_path, arch):
    import torch
    import transformers

    config_class, model_class = CASES[arch]
    folder = make_hf_checkpoint(tmp_path / "hf", config_class, model_class, head_dim=16, sliding_window=4,
                                tie_word_embeddings=True)
    hf_written = getattr(transformers, model_class).from_pretrained(folder, dtype=torch.float32)
    write_gguf(hf_written, tmp_path / "model.gguf", arch)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="model.gguf",
                                                               dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert type(ours).__name__ == type(theirs).__name__ == model_class
    for field in ("head_dim", "sliding_window", "layer_types", "query_pre_attn_scalar", "rope_parameters",
                  "tie_word_embeddings", "num_key_value_heads"):
        assert getattr(ours.config, field) == getattr(theirs.config, field), field
    ids, mask = batch(128, length=11, pad_left=(0, 3))
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = hf_call(theirs, ids, mask).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(got - want)[valid].max() <= LOGITS_ATOL
    # the file's norms are 1 + w: the loaded weights are HF's own again
    np.testing.assert_allclose(ours.model.norm.weight.asnumpy(), hf_written.model.norm.weight.detach().numpy(), atol=1e-6)
    with pytest.raises(CheckpointError, match="tokenizer of a .* GGUF file is not supported"):
        AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")
