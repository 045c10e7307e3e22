"""A character-level tokenizer and a small text, so the HF fine-tuning recipe runs on a tiny model."""
import pytest

from tests.conftest import make_hf_checkpoint

TEXT = (
    "the quick brown fox jumps over the lazy dog. "
    "a stitch in time saves nine. "
    "all that glitters is not gold. "
    "the early bird catches the worm. "
) * 12


def make_char_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for char in sorted(set("abcdefghijklmnopqrstuvwxyz .,!?'\n")):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def char_tokenizer_dir(tmp_path_factory):
    return make_char_tokenizer(tmp_path_factory.mktemp("char_tokenizer"))


@pytest.fixture(scope="session")
def char_llama(tmp_path_factory):
    """A tiny random LLaMA whose vocabulary covers the character tokenizer."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("char_llama"), vocab_size=40, seed=1)
