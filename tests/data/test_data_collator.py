"""Our collators against transformers' own (its numpy path) on the same features."""
import numpy as np
import pytest

from mindformers_hf import AutoTokenizer
from mindformers_hf.data import DataCollatorForLanguageModeling, DataCollatorWithPadding, default_data_collator
from tests.trainer.conftest import make_char_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(make_char_tokenizer(tmp_path_factory.mktemp("tok")))


def _assert_same(got, want):
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
        assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype, key


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_causal_lm_collator_matches_transformers(tokenizer, padding_side):
    import transformers

    tokenizer.padding_side = padding_side
    features = [dict(tokenizer(text)) for text in ["hello there", "a", "the lazy dog."]]
    want = transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="np",
                                                        pad_to_multiple_of=8)(features)
    got = DataCollatorForLanguageModeling(tokenizer, mlm=False, pad_to_multiple_of=8)(features)
    _assert_same(got, want)
    assert (got["labels"] == -100).any()

    id_lists = [f["input_ids"] for f in features]  # plain lists of ids take the other path
    want = transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="np")(id_lists)
    _assert_same(DataCollatorForLanguageModeling(tokenizer, mlm=False)(id_lists), want)
    tokenizer.padding_side = "right"


def test_padding_collator_and_default_collator_match_transformers(tokenizer):
    import transformers

    features = [{**tokenizer(text), "label": i} for i, text in enumerate(["one", "three", "eleven"])]
    want = transformers.DataCollatorWithPadding(tokenizer, return_tensors="np")(features)
    _assert_same(DataCollatorWithPadding(tokenizer)(features), dict(want))

    same_length = [{"input_ids": [1, 2, 3], "label_ids": [0, 1, 1]}, {"input_ids": [4, 5, 6], "label_ids": [1, 0, 0]}]
    _assert_same(default_data_collator(same_length),
                 transformers.default_data_collator(same_length, return_tensors="np"))


def test_return_tensors_kinds(tokenizer):
    import mindspore as ms
    import torch

    features = [dict(tokenizer(text)) for text in ["ab", "abc"]]
    as_ms = DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="ms")(features)
    as_pt = DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="pt")(features)
    assert isinstance(as_ms["input_ids"], ms.Tensor) and isinstance(as_pt["labels"], torch.Tensor)
    np.testing.assert_array_equal(as_ms["labels"].asnumpy(), as_pt["labels"].numpy())


def test_masked_lm_is_refused_by_name(tokenizer):
    with pytest.raises(NotImplementedError, match="mlm=True"):
        DataCollatorForLanguageModeling(tokenizer)


def _features(tokenizer, texts, with_labels):
    features = []
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        feature = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if with_labels == "seq":
            feature["labels"] = tokenizer(text[::-1][: 3 + i])["input_ids"]
        elif with_labels == "token":
            feature["labels"] = [j % 3 for j in range(len(ids))]
        features.append(feature)
    return features


TEXTS = ["hello there", "hi", "a longer sentence!"]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_seq2seq_and_token_classification_collators_match_transformers(tokenizer, padding_side):
    import transformers

    from mindformers_hf import DataCollatorForSeq2Seq, DataCollatorForTokenClassification

    tokenizer.padding_side = padding_side
    try:
        for ours, theirs, labels in ((DataCollatorForSeq2Seq, transformers.DataCollatorForSeq2Seq, "seq"),
                                     (DataCollatorForTokenClassification,
                                      transformers.DataCollatorForTokenClassification, "token")):
            for kwargs in ({}, {"pad_to_multiple_of": 8}, {"label_pad_token_id": -7}):
                features = _features(tokenizer, TEXTS, labels)
                got = ours(tokenizer, **kwargs)(features)
                want = theirs(tokenizer, return_tensors="np", **kwargs)(_features(tokenizer, TEXTS, labels))
                _assert_same(got, want)
                assert (got["labels"] == kwargs.get("label_pad_token_id", -100)).any()
    finally:
        tokenizer.padding_side = "right"


def test_multiple_choice_collator_matches_transformers_torch_path(tokenizer):
    import transformers

    from mindformers_hf import DataCollatorForMultipleChoice

    choices = [["a b", "hello", "a longer one"], ["x", "yes no", "z"]]
    features = [{**{k: [tokenizer(c)[k] for c in row] for k in ("input_ids", "attention_mask")}, "label": i}
                for i, row in enumerate(choices)]
    got = DataCollatorForMultipleChoice(tokenizer)(features)
    want = transformers.DataCollatorForMultipleChoice(tokenizer, return_tensors="pt")(features)
    _assert_same(got, {k: v.numpy() for k, v in want.items()})
    assert got["input_ids"].shape[:2] == (2, 3)


def test_flattening_collator_matches_transformers_and_emits_every_kind(tokenizer):
    import mindspore as ms
    import torch
    import transformers

    from mindformers_hf import DataCollatorWithFlattening

    features = [{"input_ids": tokenizer(t)["input_ids"]} for t in TEXTS]
    for kwargs in ({}, {"return_flash_attn_kwargs": True, "return_seq_idx": True, "separator_id": -5}):
        got = DataCollatorWithFlattening(**kwargs)(features)
        _assert_same(got, transformers.DataCollatorWithFlattening(return_tensors="np", **kwargs)(features))
    assert isinstance(DataCollatorWithFlattening(return_tensors="ms")(features)["input_ids"], ms.Tensor)
    assert isinstance(DataCollatorWithFlattening()(features, return_tensors="pt")["position_ids"], torch.Tensor)
    with pytest.raises(ValueError, match="return_tensors='tf'"):
        DataCollatorWithFlattening()(features, return_tensors="tf")


def test_new_collators_emit_mindspore_and_torch(tokenizer):
    import mindspore as ms
    import torch

    from mindformers_hf import DataCollatorForSeq2Seq, DataCollatorForTokenClassification

    seq = _features(tokenizer, TEXTS, "seq")
    batch = DataCollatorForSeq2Seq(tokenizer, return_tensors="ms")(seq)
    assert isinstance(batch["labels"], ms.Tensor) and isinstance(batch["input_ids"], ms.Tensor)
    batch = DataCollatorForTokenClassification(tokenizer)(_features(tokenizer, TEXTS, "token"), return_tensors="pt")
    assert isinstance(batch["labels"], torch.Tensor) and batch["labels"].dtype == torch.int64


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_flattened_rows_attend_within_each_example_as_transformers(tokenizer, tmp_path, family):
    """A DataCollatorWithFlattening row through the model: transformers separates the examples by their
    restarting position_ids when the cache is off (use_cache=False), and always with flash attention."""
    import torch
    import transformers

    from mindformers_hf import AutoModelForCausalLM, DataCollatorWithFlattening
    from tests.conftest import make_hf_checkpoint

    config = {"gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64))}
    config_class, model_class, overrides = config.get(family, ("LlamaConfig", "LlamaForCausalLM", {}))
    folder = make_hf_checkpoint(tmp_path, config_class, model_class, **overrides)
    features = [{"input_ids": tokenizer(t)["input_ids"]} for t in TEXTS]
    batch = DataCollatorWithFlattening()(features)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    last = features[-1]["input_ids"]
    alone = ours(input_ids=np.array([last])).logits[0]
    for use_cache in (False, None):
        got = ours(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=use_cache).logits
        with torch.no_grad():
            want = hf(input_ids=torch.tensor(batch["input_ids"]), position_ids=torch.tensor(batch["position_ids"]),
                      use_cache=use_cache).logits.numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)
        separated = np.abs(got[0, -len(last):] - alone).max() < 1e-4
        assert separated == (use_cache is False)  # transformers' cache default (on) leaves the rows joined
    if family == "llama":
        flash = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="flash_attention_2")
        got = flash(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        np.testing.assert_allclose(got[0, -len(last):], alone, atol=1e-4)
