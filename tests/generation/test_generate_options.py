"""generate() options beyond the basic decoding modes (bad words, sequence bias, prefix constraints, typical /
epsilon / eta sampling, renormalised scores), against HF transformers' generate on the same tiny checkpoint."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers  # noqa: E402

from mindformers_hf import AutoModelForCausalLM, set_seed  # noqa: E402
from tests.conftest import batch  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_llama):
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(tiny_llama), hf


@pytest.fixture(scope="module")
def prompts(models):
    ours, _ = models
    ids, mask = batch(rows=3, length=9, pad_left=(0, 4, 2), seed=3)
    free = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    return ids, mask, free


def _hf(hf, ids, mask, **kwargs):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kwargs)


def _options(free, prompt_len):
    """Options built from the unconstrained greedy output, so that each one changes what is generated."""
    new = free[:, prompt_len:]
    return {
        "bad_words": dict(bad_words_ids=[[int(new[0, 2])], [int(new[1, 3]), int(new[1, 4])]]),
        "sequence_bias": dict(sequence_bias={(int(new[2, 1]),): -5.0, (int(new[0, 0]), 17): 9.0}),
        "begin_suppress": dict(begin_suppress_tokens=[int(t) for t in new[:, 0]]),
        "decay_penalty": dict(exponential_decay_length_penalty=(2, 40.0), eos_token_id=[int(new[1, 5]), 2]),
        "renormalize": dict(renormalize_logits=True, repetition_penalty=1.4),
    }


@pytest.mark.parametrize("name", ["bad_words", "sequence_bias", "begin_suppress", "decay_penalty", "renormalize"])
@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_processor_options_match_hf(models, prompts, name, beams):
    ours, hf = models
    ids, mask, free = prompts
    kwargs = dict(max_new_tokens=10, do_sample=False, num_beams=beams, return_dict_in_generate=True,
                  output_scores=True, **_options(free, ids.shape[1])[name])
    want = _hf(hf, ids, mask, **kwargs)
    got = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    if beams == 1 and name != "renormalize":
        assert not np.array_equal(got.sequences, free), f"{name} changes nothing"
    for ours_s, hf_s in zip(got.scores, want.scores):
        hf_s = hf_s.numpy()
        np.testing.assert_array_equal(np.isfinite(ours_s), np.isfinite(hf_s))
        np.testing.assert_allclose(ours_s[np.isfinite(hf_s)], hf_s[np.isfinite(hf_s)], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("beams", [1, 2])
def test_prefix_allowed_tokens_fn_matches_hf(models, prompts, beams):
    """The function gets (batch id, the row's ids) as the caller's kind of tensor -- torch here, as in HF."""
    ours, hf = models
    ids, mask, _ = prompts
    seen = []

    def allowed(batch_id, sent):
        seen.append(type(sent))
        return list(range(20 + 10 * batch_id, 40 + 10 * batch_id)) + [int(sent[-1])]

    kwargs = dict(max_new_tokens=8, do_sample=False, num_beams=beams, prefix_allowed_tokens_fn=allowed)
    want = _hf(hf, ids, mask, **kwargs).numpy()
    got = ours.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kwargs)
    np.testing.assert_array_equal(got.numpy(), want)
    assert set(seen) == {torch.Tensor}
    for row in range(ids.shape[0]):
        for position in range(ids.shape[1], want.shape[1]):
            token = int(want[row, position])
            assert 20 + 10 * row <= token < 40 + 10 * row or token == int(want[row, position - 1])


@pytest.mark.parametrize("kwargs", [
    dict(typical_p=0.7),
    dict(epsilon_cutoff=0.02, temperature=0.8),
    dict(eta_cutoff=0.05, top_k=30),
    dict(typical_p=0.9, top_p=0.9, renormalize_logits=True),
    dict(top_h=0.5),
], ids=["typical", "epsilon", "eta", "typical_top_p_renorm", "top_h"])
def test_sampling_warpers_match_hf_processors(models, prompts, kwargs):
    """Sampled tokens differ from torch's RNG, so the check is on the distributions: each step's warped scores
    equal those transformers' own processor list (built by its generate from the same options) gives on the
    same logits and prefix; and every sampled token has a finite warped score."""
    ours, hf = models
    ids, mask, _ = prompts
    set_seed(0)
    got = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=True,
                        return_dict_in_generate=True, output_scores=True, output_logits=True, **kwargs)
    config = hf._prepare_generation_config(None, do_sample=True, max_new_tokens=6, **kwargs)[0]
    config._eos_token_tensor = torch.tensor([2])
    processors = hf._get_logits_processor(config, input_ids_seq_length=ids.shape[1], device="cpu",
                                          model_kwargs={"attention_mask": torch.tensor(mask)})
    for step, (scores, logits) in enumerate(zip(got.scores, got.logits)):
        prefix = torch.tensor(got.sequences[:, :ids.shape[1] + step])
        want = processors(prefix, torch.tensor(logits)).numpy()
        np.testing.assert_array_equal(np.isfinite(scores), np.isfinite(want))
        np.testing.assert_allclose(scores[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-5, atol=1e-5)
        chosen = got.sequences[:, ids.shape[1] + step]
        assert np.isfinite(scores[np.arange(len(chosen)), chosen]).all()
        assert (~np.isfinite(scores)).any(), "the warpers filter nothing"


@pytest.mark.parametrize("kwargs", [dict(num_beams=3, num_return_sequences=2), dict(num_beams=2)],
                         ids=["beams3_return2", "beams2"])
def test_repetition_penalty_with_expanded_rows_matches_hf(models, prompts, kwargs):
    """Left-padding lengths are per expanded row (beams, returned sequences), as in transformers (which expands
    the rows before building its processors); one length per prompt row failed to broadcast."""
    ours, hf = models
    ids, mask, _ = prompts
    kwargs = dict(max_new_tokens=8, do_sample=False, repetition_penalty=1.5, **kwargs)
    want = _hf(hf, ids, mask, **kwargs).numpy()
    np.testing.assert_array_equal(ours.generate(input_ids=ids, attention_mask=mask, **kwargs), want)


@pytest.mark.parametrize("beams", [1, 2], ids=["greedy", "beam2"])
def test_output_hidden_states_scores_and_logits_match_hf(models, prompts, beams):
    """return_dict_in_generate with output_hidden_states / output_scores / output_logits: one entry per generated
    token, each a tuple over embeddings + layers of [rows, tokens fed, hidden] (the whole prompt first, then one
    token), the values HF gives (padded prompt positions left out: neither side's values there mean anything)."""
    ours, hf = models
    ids, mask, _ = prompts
    kwargs = dict(max_new_tokens=5, do_sample=False, num_beams=beams, return_dict_in_generate=True,
                  output_hidden_states=True, output_scores=True, output_logits=True)
    want = _hf(hf, ids, mask, **kwargs)
    got = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    assert len(got.hidden_states) == len(want.hidden_states) == len(got.scores) > 1
    keep = np.repeat(mask.astype(bool), beams, 0)
    for step, (mine, theirs) in enumerate(zip(got.hidden_states, want.hidden_states)):
        assert len(mine) == len(theirs) == hf.config.num_hidden_layers + 1
        for layer_mine, layer_theirs in zip(mine, theirs):
            assert layer_mine.shape == tuple(layer_theirs.shape)
            layer_theirs = layer_theirs.numpy()
            if step == 0:
                layer_mine, layer_theirs = layer_mine[keep], layer_theirs[keep]
            np.testing.assert_allclose(layer_mine, layer_theirs, rtol=1e-4, atol=1e-4)
    for mine, theirs in zip(got.scores + got.logits, want.scores + want.logits):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-4, atol=1e-4)


def test_output_attentions_raises_by_name(models, prompts):
    ours, _ = models
    ids, mask, _ = prompts
    with pytest.raises(NotImplementedError, match="output_attentions"):
        ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, return_dict_in_generate=True,
                      output_attentions=True)
