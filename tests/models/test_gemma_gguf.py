"""Gemma 2 and Gemma 3 text GGUF files (llama.cpp's names, norms stored as 1 + w) load as HF's GGUF loader
loads them: the same config, the same logits and the same tokenizer. The files are written with `gguf` from a tiny
checkpoint HF wrote and a SentencePiece vocabulary trained here."""
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
    with pytest.raises(CheckpointError, match="no tokenizer"):  # this file carries none
        AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")


def test_gemma_gguf_tokenizer_equals_hf_gguf_loader(tmp_path):
    """A Gemma-style SentencePiece BPE (<pad> <eos> <bos> <unk> <mask> first, byte fallback, whitespace-only
    pieces stored as real spaces as llama.cpp's Gemma converter writes them, no merges in the file)."""
    import sentencepiece as spm
    import transformers

    from tests.test_gguf_metadata import CORPUS, _assert_same_tokenizer, _write_gguf

    text = tmp_path / "train.txt"
    text.write_text("\n".join(CORPUS * 20 + ["The quick  brown fox   jumps over the lazy dog."] * 50),
                    encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "sp"), vocab_size=500,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0, pad_id=0, eos_id=1,
                                   bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
                                   unk_piece="<unk>", control_symbols=["<mask>"], user_defined_symbols=["<think>"],
                                   remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                                   add_dummy_prefix=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert any(len(p) > 1 and set(p) == {"\u2581"} for p in pieces)  # the respelling below has work to do
    tokens = [" " * len(p) if len(p) > 1 and set(p) == {"\u2581"} else p for p in pieces]
    kinds = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else
             4 if pieces[i] == "<think>" else 1 for i in range(len(pieces))]
    _write_gguf(tmp_path / "g.gguf", "gemma3", "llama", tokens, kinds,
                # scores that do not follow the merge order (as Gemma's): the merges must rank by file order
                scores=[float(i) for i in range(len(pieces))], bos_token_id=2, eos_token_id=1,
                unk_token_id=3, pad_token_id=0)
    ours = AutoTokenizer.from_pretrained(tmp_path, gguf_file="g.gguf")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="g.gguf")
    _assert_same_tokenizer(ours, hf, CORPUS + ["The quick  brown fox   jumps", "  two   spaces"])
    assert ours("Hi").input_ids[0] == 2
