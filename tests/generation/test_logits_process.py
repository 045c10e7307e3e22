"""Our logits processors give transformers' probabilities on the same logits (HF on torch is the oracle)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers.generation.logits_process as hf_lp  # noqa: E402

from mindformers_hf.generation import logits_process as lp  # noqa: E402

CASES = [
    ("TemperatureLogitsWarper", dict(temperature=0.7)),
    ("TopKLogitsWarper", dict(top_k=5)),
    ("TopKLogitsWarper", dict(top_k=3, min_tokens_to_keep=6)),
    ("TopPLogitsWarper", dict(top_p=0.9)),
    ("TopPLogitsWarper", dict(top_p=0.3, min_tokens_to_keep=3)),
    ("MinPLogitsWarper", dict(min_p=0.1)),
    ("MinPLogitsWarper", dict(min_p=0.9, min_tokens_to_keep=2)),
    ("RepetitionPenaltyLogitsProcessor", dict(penalty=1.5)),
    ("RepetitionPenaltyLogitsProcessor", dict(penalty=0.7)),
    ("RepetitionPenaltyLogitsProcessor", dict(penalty=1.2, prompt_ignore_length=4)),
    ("NoRepeatNGramLogitsProcessor", dict(ngram_size=2)),
    ("NoRepeatNGramLogitsProcessor", dict(ngram_size=1)),
    ("MinLengthLogitsProcessor", dict(min_length=20, eos_token_id=[2, 7])),
    ("MinLengthLogitsProcessor", dict(min_length=5, eos_token_id=2)),
    ("MinNewTokensLengthLogitsProcessor", dict(prompt_length_to_skip=8, min_new_tokens=6, eos_token_id=[3])),
    ("SuppressTokensLogitsProcessor", dict(suppress_tokens=[1, 4, 9])),
    ("SuppressTokensAtBeginLogitsProcessor", dict(begin_suppress_tokens=[0, 5], begin_index=12)),  # fires
    ("SuppressTokensAtBeginLogitsProcessor", dict(begin_suppress_tokens=[0, 5], begin_index=11)),  # does not
    ("ForcedEOSTokenLogitsProcessor", dict(max_length=13, eos_token_id=[2, 5])),
    ("LogitNormalization", dict()),
    ("TypicalLogitsWarper", dict(mass=0.9)),
    ("TypicalLogitsWarper", dict(mass=0.4, min_tokens_to_keep=3)),
    ("EpsilonLogitsWarper", dict(epsilon=0.02)),
    ("EpsilonLogitsWarper", dict(epsilon=0.3, min_tokens_to_keep=2)),
    ("EtaLogitsWarper", dict(epsilon=0.05)),
    ("EtaLogitsWarper", dict(epsilon=0.5, min_tokens_to_keep=3)),
    ("TopHLogitsWarper", dict(top_h=0.4)),
    ("TopHLogitsWarper", dict(top_h=0.8)),
    ("ExponentialDecayLengthPenalty", dict(exponential_decay_length_penalty=(2, 1.5), eos_token_id=[2, 5],
                                           input_ids_seq_length=8)),
    ("ExponentialDecayLengthPenalty", dict(exponential_decay_length_penalty=(4, 1.5), eos_token_id=2,
                                           input_ids_seq_length=8)),
    ("SuppressTokensAtBeginLogitsProcessor", dict(begin_suppress_tokens=[1, 4, 50], begin_index=12)),
    ("SuppressTokensAtBeginLogitsProcessor", dict(begin_suppress_tokens=[1, 4], begin_index=11)),
    ("SequenceBiasLogitsProcessor", dict(sequence_bias={(7,): 2.5, (3, 9): -1.5})),
    ("SequenceBiasLogitsProcessor", dict(sequence_bias=[[[7], 2.5], [[1, 2, 3], 4.0]])),
    ("NoBadWordsLogitsProcessor", dict(bad_words_ids=[[3], [2], [6, 6, 1]], eos_token_id=2)),
]


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    scores = (rng.standard_normal((3, 40)) * 3).astype(np.float32)
    # short vocabulary of repeated ids so that n-gram and repetition rules fire
    ids = rng.integers(0, 12, size=(3, 12)).astype(np.int64)
    ids[0, -3:] = ids[0, :3]
    return ids, scores


def _hf(name, kwargs):
    if name in ("MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor", "ForcedEOSTokenLogitsProcessor",
                "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor"):
        kwargs = {**kwargs, "device": "cpu"}
    return getattr(hf_lp, name)(**kwargs)


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_processor_matches_transformers(name, kwargs):
    ids, scores = _inputs()
    want = _hf(name, dict(kwargs))(torch.tensor(ids), torch.tensor(scores)).numpy()
    got = getattr(lp, name)(**kwargs)(ids, scores.copy())
    assert isinstance(got, np.ndarray) and got.shape == want.shape
    assert (np.isfinite(got) == np.isfinite(want)).all(), "different tokens filtered out"
    np.testing.assert_allclose(lp.softmax(got), torch.softmax(torch.tensor(want, dtype=torch.float64), -1).numpy(),
                               atol=1e-6)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


def test_context_dependent_processors_match_transformers():
    """Multi-token sequence biases / bad words that the rows do end with, and prefix constraints (also over beams,
    with a row whose allowed tokens are all -inf already): same scores as transformers."""
    ids, scores = _inputs(4)
    scores[2, [5, 6]] = -np.inf
    ends = [tuple(int(t) for t in ids[r, -k:]) for r, k in ((0, 1), (1, 2), (2, 3))]
    allowed = lambda batch_id, sent: [int(sent[-1]), batch_id + 5, 6]  # noqa: E731
    cases = [
        ("SequenceBiasLogitsProcessor", dict(sequence_bias={ends[0] + (4,): 3.0, ends[1] + (9,): -2.0,
                                                            ends[2] + (11,): 1.25, (9,): 0.5})),
        ("NoBadWordsLogitsProcessor", dict(bad_words_ids=[list(ends[0]) + [4], list(ends[2]) + [11], [9]],
                                           eos_token_id=[9, 2])),
        ("PrefixConstrainedLogitsProcessor", dict(prefix_allowed_tokens_fn=allowed, num_beams=1)),
        ("PrefixConstrainedLogitsProcessor", dict(prefix_allowed_tokens_fn=allowed, num_beams=3)),
    ]
    for name, kwargs in cases:
        want = _hf(name, dict(kwargs))(torch.tensor(ids), torch.tensor(scores)).numpy()
        got = getattr(lp, name)(**kwargs)(ids, scores.copy())
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=name)
        np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-6, err_msg=name)
        assert not np.array_equal(got, scores), f"{name}: the case changes nothing"
    with pytest.raises(ValueError, match="bad_words_ids"):
        lp.NoBadWordsLogitsProcessor([3])
    with pytest.raises(ValueError, match="empty list"):
        lp.PrefixConstrainedLogitsProcessor(lambda b, s: [], 1)(ids, scores.copy())


def test_processor_list_and_kinds():
    """A list chains processors in order; torch in gives torch out; transformers' own processors run too."""
    ids, scores = _inputs(1)
    chain = lp.LogitsProcessorList([lp.TemperatureLogitsWarper(0.5), hf_lp.TopKLogitsWarper(4)])
    got = chain(ids, scores.copy())
    want = hf_lp.TopKLogitsWarper(4)(torch.tensor(ids), torch.tensor(scores) / 0.5).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    out = lp.TopPLogitsWarper(0.8)(torch.tensor(ids), torch.tensor(scores))
    assert isinstance(out, torch.Tensor)
    with pytest.raises(ValueError):
        lp.TopKLogitsWarper(0)
    with pytest.raises(ValueError):
        lp.TemperatureLogitsWarper(0.0)


def test_top_p_after_top_k_matches_transformers():
    """Few finite scores (after top-k): top-p and sampling work on those columns only; same result."""
    ids, scores = _inputs(2)
    scores = np.tile(scores, (1, 8)) + np.linspace(0, 1, 320, dtype=np.float32)  # 320 distinct scores per row
    topk = hf_lp.TopKLogitsWarper(5)(torch.tensor(ids), torch.tensor(scores)).numpy()
    assert lp.sparse_columns(topk) is not None
    for top_p in (0.3, 0.8, 0.95):
        want = hf_lp.TopPLogitsWarper(top_p)(torch.tensor(ids), torch.tensor(topk)).numpy()
        got = lp.TopPLogitsWarper(top_p)(ids, topk.copy())
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)])
