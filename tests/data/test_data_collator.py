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
