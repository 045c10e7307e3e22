"""Gemma GGUF vocabularies tokenize as HF's GGUF loader reads them. (Gemma 2 / Gemma 3 text GGUF weights, config
and logits are the family matrix's GGUF cells: tests/models/matrix.py, tests/models/gguf_writer.py.)"""
import pytest

from mindformers_hf import AutoTokenizer

gguf = pytest.importorskip("gguf")


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
