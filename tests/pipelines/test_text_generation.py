"""pipeline("text-generation") against transformers' own pipeline on SmolLM2, greedy."""
import pytest

from mindformers_hf import pipeline

CHAT = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def both(smollm2):
    import transformers

    ours = pipeline("text-generation", model=smollm2.ours, tokenizer=smollm2.tokenizer)
    theirs = transformers.pipeline("text-generation", model=smollm2.hf, tokenizer=smollm2.hf_tokenizer)
    return ours, theirs


@pytest.mark.parametrize("inputs", ["The capital of France is", ["Once upon a time", "def add(a, b):"], CHAT],
                         ids=["string", "list", "chat"])
def test_pipeline_matches_hf(both, inputs):
    ours, theirs = both
    kwargs = dict(max_new_tokens=10, do_sample=False)
    assert ours(inputs, **kwargs) == theirs(inputs, **kwargs)


def test_pipeline_new_text_only_and_batching(both):
    ours, theirs = both
    kwargs = dict(max_new_tokens=6, do_sample=False, return_full_text=False)
    prompts = ["Hello, my name is", "Paris is"]
    want = theirs(prompts, **kwargs)
    assert ours(prompts, **kwargs) == want
    batched = ours(prompts, batch_size=2, **kwargs)
    assert [r[0]["generated_text"] for r in batched] == [r[0]["generated_text"] for r in want]


def test_pipeline_rejects_unknown_task():
    with pytest.raises(ValueError, match="not supported"):
        pipeline("translation", model="x")
