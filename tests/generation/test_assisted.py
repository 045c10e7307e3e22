"""Assisted decoding (assistant_model) and prompt lookup decoding: greedy tokens equal plain greedy search's and
HF's assisted generate on the same tiny checkpoints, with fewer forwards of the main model when drafts hit."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers  # noqa: E402

from mindformers_hf import AutoModelForCausalLM, set_seed  # noqa: E402
from mindformers_hf.generation import assisted  # noqa: E402
from tests.conftest import make_hf_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_llama, tmp_path_factory):
    draft = make_hf_checkpoint(tmp_path_factory.mktemp("draft_llama"), seed=9, num_hidden_layers=1)
    load = lambda path: (AutoModelForCausalLM.from_pretrained(path),  # noqa: E731
                         transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval())
    return load(tiny_llama), load(draft)


def _prompt():
    """A prompt that repeats itself, so n-gram lookup finds continuations."""
    return np.array([[1] + [23, 57, 91, 14, 66] * 3 + [23, 57]], np.int64)


def _count_forwards(model, monkeypatch):
    calls = []
    forward = assisted._forward
    monkeypatch.setattr(assisted, "_forward", lambda m, *a: calls.append(m) or forward(m, *a))
    return calls


@pytest.mark.parametrize("kwargs", [
    dict(prompt_lookup_num_tokens=4),
    dict(prompt_lookup_num_tokens=10, max_matching_ngram_size=3, repetition_penalty=1.2),
    dict(prompt_lookup_num_tokens=3, eos_token_id=[2, 66]),
], ids=["lookup4", "lookup10_penalty", "lookup_eos"])
def test_prompt_lookup_is_greedy(models, kwargs, monkeypatch):
    kwargs = dict(kwargs)
    (ours, hf), _ = models
    ids = _prompt()
    lookup = {k: kwargs.pop(k) for k in ("prompt_lookup_num_tokens", "max_matching_ngram_size") if k in kwargs}
    common = dict(max_new_tokens=16, do_sample=False, return_dict_in_generate=True, output_scores=True, **kwargs)
    plain = ours.generate(input_ids=ids, **common)
    calls = _count_forwards(ours, monkeypatch)
    got = ours.generate(input_ids=ids, **common, **lookup)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), **common, **lookup)
    np.testing.assert_array_equal(got.sequences, plain.sequences)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    assert len(got.scores) == len(want.scores) == got.sequences.shape[1] - ids.shape[1]
    for mine, theirs in zip(got.scores, want.scores):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-4, atol=1e-4)
    assert 0 < len(calls) <= got.sequences.shape[1] - ids.shape[1]


@pytest.mark.parametrize("same", [True, False], ids=["self_draft", "small_draft"])
def test_assistant_model_is_greedy(models, same, monkeypatch):
    """With the model as its own assistant every draft is accepted (one verifying forward per 20 tokens); a
    different one-layer draft model changes only how many tokens each forward keeps."""
    (ours, hf), (draft, hf_draft) = models
    ids = _prompt()[:, :9]
    plain = ours.generate(input_ids=ids, max_new_tokens=24, do_sample=False)
    calls = _count_forwards(ours, monkeypatch)
    got = ours.generate(input_ids=ids, max_new_tokens=24, do_sample=False, assistant_model=ours if same else draft)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), max_new_tokens=24, do_sample=False,
                           assistant_model=hf if same else hf_draft).numpy()
    np.testing.assert_array_equal(got, plain)
    np.testing.assert_array_equal(got, want)
    main_calls = [m for m in calls if m is ours]
    if same:
        assert len(main_calls) == 2  # 20 drafted + 1, then 2 drafted + 1 (capped by max_length)


def test_assisted_limits_raise(models):
    (ours, _), (draft, hf_draft) = models
    ids = _prompt()
    with pytest.raises(ValueError, match="batch_size = 1"):
        ours.generate(input_ids=np.repeat(ids, 2, 0), prompt_lookup_num_tokens=3, max_new_tokens=4)
    with pytest.raises(NotImplementedError, match="assistant_ensemble_weight"):
        ours.generate(input_ids=ids, assistant_model=draft, assistant_ensemble_weight=0.5, max_new_tokens=4)
    with pytest.raises(TypeError, match="assistant_model"):
        ours.generate(input_ids=ids, assistant_model=hf_draft, max_new_tokens=4)


@pytest.mark.parametrize("helper", ["lookup", "self_draft", "small_draft"])
def test_sampling_with_candidates(models, helper):
    """do_sample=True: with top_k=1 the warped distributions are one-hot, so prompt lookup's per-position sampling
    and speculative sampling (accept while u < p/q, else resample from max(p - q, 0)) must give greedy's tokens,
    as HF's do; with a real distribution a seed repeats the draw."""
    (ours, hf), (draft, hf_draft) = models
    ids = _prompt()
    options = {"lookup": (dict(prompt_lookup_num_tokens=4), dict(prompt_lookup_num_tokens=4)),
               "self_draft": (dict(assistant_model=ours), dict(assistant_model=hf)),
               "small_draft": (dict(assistant_model=draft), dict(assistant_model=hf_draft))}[helper]
    greedy = ours.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
    got = ours.generate(input_ids=ids, max_new_tokens=12, do_sample=True, top_k=1, **options[0])
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), max_new_tokens=12, do_sample=True, top_k=1,
                           **options[1]).numpy()
    np.testing.assert_array_equal(got, greedy)
    np.testing.assert_array_equal(got, want)
    draws = []
    for _ in range(2):
        set_seed(3)
        draws.append(ours.generate(input_ids=ids, max_new_tokens=12, min_new_tokens=12, do_sample=True,
                                   temperature=1.5, **options[0]))
    np.testing.assert_array_equal(draws[0], draws[1])
    assert draws[0].shape == (1, ids.shape[1] + 12) and (draws[0] < 128).all()
