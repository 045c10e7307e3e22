"""pipeline("text-classification"), ("token-classification") and ("feature-extraction") against transformers' pipeline on the same tiny classifier and tokenizer."""
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


@pytest.mark.parametrize("with_head", [False, True])
def test_feature_extraction_pipeline_matches_transformers(classifier, tmp_path, with_head):
    """The base model's hidden states, from a base-model folder or from a with-head checkpoint."""
    import numpy as np
    import mindspore as ms
    import transformers

    folder = classifier
    if not with_head:
        base = transformers.AutoModel.from_pretrained(classifier)
        base.save_pretrained(tmp_path)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(f"{classifier}/{name}", tmp_path / name)
        folder = str(tmp_path)
    ours = pipeline("feature-extraction", model=folder)
    theirs = transformers.pipeline("feature-extraction", model=folder)
    for text in ("hello there", ["a b", "longer text here"]):
        got, want = ours(text), theirs(text)
        if isinstance(text, str):
            got, want = [got], [want]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert isinstance(g, list) and np.asarray(g).shape == np.asarray(w).shape
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4)
    tensor = ours("hello", return_tensors=True)
    assert isinstance(tensor, ms.Tensor) and tensor.shape[0] == 1
    np.testing.assert_allclose(tensor.asnumpy(), theirs("hello", return_tensors=True).numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tagger")
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    make_hf_checkpoint(folder, model_class="LlamaForTokenClassification", vocab_size=40, num_labels=5, seed=7,
                       id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    tokenizer = make_char_tokenizer(tmp_path_factory.mktemp("tok2"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tokenizer}/{name}", folder / name)
    return str(folder)


@pytest.mark.parametrize("task", ["token-classification", "ner"])
def test_token_classification_pipeline_matches_transformers(tagger, task):
    import warnings

    import transformers

    ours = pipeline(task, model=tagger)
    theirs = transformers.pipeline(task, model=tagger)
    texts = ["john lives in paris", "a b c"]

    def same(got, want):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert set(g) == set(w)
            for key in w:
                if key == "score":
                    assert g[key] == pytest.approx(float(w[key]), abs=1e-5)
                else:
                    assert g[key] == w[key], key

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' "fallback heuristic" warning for this char tokenizer
        for strategy in (None, "simple", "first", "average", "max"):
            for ignore in (None, []):
                kwargs = {k: v for k, v in (("aggregation_strategy", strategy), ("ignore_labels", ignore))
                          if v is not None}
                got, want = ours(texts[0], **kwargs), theirs(texts[0], **kwargs)
                same(got, want)
                assert got or ignore is None  # with nothing ignored every token is reported
                for g, w in zip(ours(texts, **kwargs), theirs(texts, **kwargs)):
                    same(g, w)
    with pytest.raises(NotImplementedError, match="stride"):
        ours(texts[0], stride=2)
