"""A StarCoder2 GGUF file (llama.cpp's names: LayerNorm weights and biases, ffn_up / ffn_down for c_fc / c_proj,
no q/k permutation) loads as HF's GGUF loader loads it: the same config and the same logits. The file is written
with `gguf` from a tiny checkpoint HF wrote."""
import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from tests.conftest import batch, make_hf_checkpoint
from tests.models.family_parity import LOGITS_ATOL, hf_call

gguf = pytest.importorskip("gguf")

_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def _gguf_name(hf_name):
    module, _, kind = hf_name.rpartition(".")
    if module in _TOP:
        return f"{_TOP[module]}.{kind}"
    _, _, layer, rest = module.split(".", 3)
    return f"blk.{layer}.{_LAYER[rest]}.{kind}"


def test_starcoder2_gguf_matches_hf_gguf_loader(tmp_path):
    import torch
    import transformers

    folder = make_hf_checkpoint(tmp_path / "hf", "Starcoder2Config", "Starcoder2ForCausalLM", norm_epsilon=1e-4)
    hf_written = transformers.Starcoder2ForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = hf_written.config
    writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "starcoder2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_embedding_length(config.hidden_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_eps(config.norm_epsilon)
    # HF's loader reads StarCoder2's vocabulary size only from the vocabulary (no `vocab_size` key)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(config.vocab_size)])
    for name, tensor in hf_written.state_dict().items():
        writer.add_tensor(_gguf_name(name), tensor.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

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
