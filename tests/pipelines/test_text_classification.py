"""pipeline("text-classification") against transformers' pipeline on the same tiny classifier and tokenizer."""
import shutil

import pytest

from mindformers_hf import pipeline
from tests.conftest import make_hf_checkpoint
from tests.trainer.conftest import make_char_tokenizer


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    make_hf_checkpoint(folder, model_class="LlamaForSequenceClassification", vocab_size=40, num_labels=3,
                       id2label={0: "neg", 1: "neutral", 2: "pos"}, label2id={"neg": 0, "neutral": 1, "pos": 2})
    tokenizer = make_char_tokenizer(tmp_path_factory.mktemp("tok"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tokenizer}/{name}", folder / name)
    return str(folder)


def _close(got, want):
    if isinstance(want, dict):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5)
    else:
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            _close(g, w)


@pytest.mark.parametrize("task", ["text-classification", "sentiment-analysis"])
def test_text_classification_pipeline_matches_transformers(classifier, task):
    import transformers

    ours = pipeline(task, model=classifier)
    theirs = transformers.pipeline(task, model=classifier)
    texts = ["hello there!", "a b c", "this is good"]
    calls = [((texts[0],), {}), ((texts,), {}), ((texts[0],), {"top_k": None}), ((texts,), {"top_k": 2}),
             ((texts[1],), {"function_to_apply": "sigmoid"}), ((texts[2],), {"function_to_apply": "none", "top_k": 1}),
             (({"text": "abc", "text_pair": "de"},), {})]
    for args, kwargs in calls:
        _close(ours(*args, **kwargs), theirs(*args, **kwargs))
    _close(ours(texts, batch_size=2), theirs(texts, batch_size=2))
    with pytest.raises(ValueError, match="function_to_apply"):
        ours("x", function_to_apply="relu")
