"""`perplexity` against transformers' documented sliding-window recipe run on HF transformers (torch)."""
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from mindformers_hf.evaluation import perplexity

TEXTS = ["the quick brown fox jumps over the lazy dog. " * 3, "a stitch in time saves nine.",
         "all that glitters is not gold, and the early bird catches the worm! " * 2]


def hf_recipe(folder, texts, stride, max_length):
    """docs/source/en/perplexity.md, verbatim but for the model and data."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    encodings = tokenizer("\n\n".join(texts), return_tensors="pt")
    seq_len = encodings.input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings.input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(torch.exp(nll_sum / n_tokens))


@pytest.mark.parametrize("stride,max_length", [(16, 32), (32, 32), (40, 64)])
def test_perplexity_equals_hf_recipe(char_llama_dir, stride, max_length):
    model = AutoModelForCausalLM.from_pretrained(char_llama_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(char_llama_dir)
    got = perplexity(model, tokenizer, TEXTS, stride=stride, max_length=max_length)
    assert got == pytest.approx(hf_recipe(char_llama_dir, TEXTS, stride, max_length), rel=1e-5)


def test_perplexity_defaults_and_errors(char_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(char_llama_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(char_llama_dir)
    # max_length defaults to the config's max_position_embeddings (64)
    assert perplexity(model, tokenizer, TEXTS, stride=64) == pytest.approx(hf_recipe(char_llama_dir, TEXTS, 64, 64),
                                                                          rel=1e-5)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tokenizer, TEXTS, stride=100)
    with pytest.raises(ValueError, match="no texts"):
        perplexity(model, tokenizer, [])
