"""generate() on tiny random LLaMA/Mistral checkpoints written by HF, against HF transformers' generate."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers  # noqa: E402

from mindformers_hf import AutoModelForCausalLM, GenerationConfig, set_seed  # noqa: E402
from tests.conftest import batch, make_hf_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_llama):
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(tiny_llama), hf


def _prompts(rows=3, length=9, pads=(0, 4, 2)):
    return batch(rows=rows, length=length, pad_left=pads, seed=3)


def _hf_generate(hf, ids, mask, **kwargs):
    with torch.no_grad():
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kwargs)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_greedy_matches_hf_batched_left_padded(models, compiled):
    ours, hf = models
    ids, mask = _prompts()
    want = _hf_generate(hf, ids, mask, max_new_tokens=14, do_sample=False).numpy()
    got = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=14, do_sample=False,
                        disable_compile=not compiled)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, want)
    if compiled:
        graphs = ours.__dict__["_mindformers_decode_graphs"]
        assert any(graph.key[2] and graph.step.compiled for graph in graphs)


def test_eos_list_stops_rows_and_pads(models):
    """A second eos id that one row generates early: that row stops and is padded, as in HF."""
    ours, hf = models
    ids, mask = _prompts()
    free = _hf_generate(hf, ids, mask, max_new_tokens=10, do_sample=False).numpy()
    stop_token = int(free[1, ids.shape[1] + 2])
    kwargs = dict(max_new_tokens=10, do_sample=False, eos_token_id=[2, stop_token], pad_token_id=0)
    want = _hf_generate(hf, ids, mask, **kwargs).numpy()
    got = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
    np.testing.assert_array_equal(got, want)
    assert (got[1, ids.shape[1] + 3:] == 0).all()


@pytest.mark.parametrize("kwargs", [
    dict(num_beams=3),
    dict(num_beams=4, num_return_sequences=2, length_penalty=0.6),
    dict(num_beams=3, early_stopping=True, length_penalty=1.5),
    dict(num_beams=2, early_stopping="never", eos_token_id=[2, 40, 77]),
], ids=["beams3", "return2", "early_stop", "never_eos_list"])
def test_beam_search_matches_hf(models, kwargs):
    ours, hf = models
    ids, mask = _prompts()
    want = _hf_generate(hf, ids, mask, max_new_tokens=10, do_sample=False, return_dict_in_generate=True,
                        output_scores=True, **kwargs)
    got = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                        return_dict_in_generate=True, output_scores=True, **kwargs)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    np.testing.assert_allclose(got.sequences_scores, want.sequences_scores.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.beam_indices, want.beam_indices.numpy())
    ours_t = ours.compute_transition_scores(got.sequences, got.scores, got.beam_indices)
    hf_t = hf.compute_transition_scores(want.sequences, want.scores, want.beam_indices).numpy()
    np.testing.assert_allclose(ours_t, hf_t, rtol=1e-4, atol=1e-4)


def test_scores_logits_and_transition_scores_match_hf(models):
    ours, hf = models
    ids, mask = _prompts()
    kwargs = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_scores=True,
                  output_logits=True, repetition_penalty=1.3)
    want = _hf_generate(hf, ids, mask, **kwargs)
    got = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    assert len(got.scores) == len(want.scores) == len(got.logits) == 6
    for ours_s, hf_s in zip(got.scores + got.logits, want.scores + want.logits):
        np.testing.assert_allclose(ours_s, hf_s.numpy(), rtol=1e-4, atol=1e-4)
    for normalize in (False, True):
        np.testing.assert_allclose(
            ours.compute_transition_scores(got.sequences, got.scores, normalize_logits=normalize),
            hf.compute_transition_scores(want.sequences, want.scores, normalize_logits=normalize).numpy(),
            rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [
    dict(repetition_penalty=1.5, no_repeat_ngram_size=2),
    dict(min_new_tokens=8, eos_token_id=[2, 5, 9, 17]),
    dict(max_length=15),
    dict(begin_suppress_tokens=list(range(64))),  # half the vocabulary banned at the first new token only
], ids=["penalties", "min_new_tokens", "max_length", "begin_suppress_tokens"])
def test_processors_in_greedy_match_hf(models, kwargs):
    ours, hf = models
    ids, mask = _prompts()
    kwargs = {"max_new_tokens": 12, **kwargs} if "max_length" not in kwargs else kwargs
    want = _hf_generate(hf, ids, mask, do_sample=False, **kwargs).numpy()
    got = ours.generate(input_ids=ids, attention_mask=mask, do_sample=False, **kwargs)
    np.testing.assert_array_equal(got, want)


def test_generation_config_object_and_input_kinds(models):
    ours, hf = models
    ids, mask = _prompts(rows=1, pads=(0,))
    config = GenerationConfig(max_new_tokens=5, do_sample=False)
    want = _hf_generate(hf, ids, mask, generation_config=config).numpy()
    out_pt = ours.generate(torch.tensor(ids), generation_config=config)  # no mask: nothing is padding
    assert isinstance(out_pt, torch.Tensor)
    np.testing.assert_array_equal(out_pt.numpy(), want)
    import mindspore as ms

    out_ms = ours.generate(input_ids=ms.Tensor(ids), attention_mask=ms.Tensor(mask), max_new_tokens=5)
    assert isinstance(out_ms, ms.Tensor)
    np.testing.assert_array_equal(out_ms.asnumpy(), want)


def test_padded_and_unpadded_prompts_generate_the_same(models):
    ours, _ = models
    ids, mask = _prompts()
    batched = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8)
    for row in range(ids.shape[0]):
        alone = ids[row:row + 1, mask[row].astype(bool)]
        single = ours.generate(input_ids=alone, max_new_tokens=8)
        np.testing.assert_array_equal(single[0, alone.shape[1]:], batched[row, ids.shape[1]:])


def test_sampling_reproducible_with_set_seed(models):
    ours, _ = models
    ids, mask = _prompts()
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=True, temperature=1.5,
                  top_k=40, top_p=0.95, num_return_sequences=2)
    set_seed(7)
    first = ours.generate(**kwargs)
    set_seed(7)
    second = ours.generate(**kwargs)
    set_seed(8)
    third = ours.generate(**kwargs)
    assert first.shape == (6, ids.shape[1] + 12)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)
    np.testing.assert_array_equal(first[::2, :ids.shape[1]], ids)


def test_sampling_follows_the_distribution(models):
    """min_p/top_k sampling never picks a token the warpers filtered out, and temperature ~0 is greedy."""
    ours, _ = models
    ids, mask = _prompts()
    greedy = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6)
    set_seed(0)
    cold = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=1)
    np.testing.assert_array_equal(cold, greedy)


def test_sliding_window_model_matches_hf(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "mistral", "MistralConfig", "MistralForCausalLM", sliding_window=4)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = _prompts(rows=2, pads=(0, 3))
    want = _hf_generate(hf, ids, mask, max_new_tokens=10, do_sample=False).numpy()
    np.testing.assert_array_equal(ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10), want)


def test_unsupported_features_raise(models):
    ours, _ = models
    ids, _ = _prompts(rows=1, pads=(0,))
    with pytest.raises(NotImplementedError, match="contrastive search"):
        ours.generate(input_ids=ids, penalty_alpha=0.6, top_k=4, max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="beam sampling"):
        ours.generate(input_ids=ids, num_beams=2, do_sample=True, max_new_tokens=3)
    with pytest.raises(ValueError, match="tokenizer"):
        ours.generate(input_ids=ids, stop_strings=["x"], max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="quantized"):
        ours.generate(input_ids=ids, cache_implementation="quantized", max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="DoLa"):
        ours.generate(input_ids=ids, dola_layers="high", max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="constrained beam search"):
        ours.generate(input_ids=ids, force_words_ids=[[5]], num_beams=2, max_new_tokens=3)


def test_other_families_generate_like_hf(tmp_path):
    """GPT-2 (no static-cache path: the growing cache, op by op) and Mixtral give HF's greedy tokens too.
    Mixtral's decode step is traced where the moe_experts CPU kernel runs (its routing indices stay graph
    inputs); the grouped fallback reads them on the host, so without the kernel the step runs op by op."""
    from mindformers_hf.ops import registry

    from tests.models.test_gpt2_parity import make_gpt2_checkpoint

    folders = [make_gpt2_checkpoint(tmp_path / "gpt2"),
               make_hf_checkpoint(tmp_path / "mixtral", "MixtralConfig", "MixtralForCausalLM", num_local_experts=4,
                                  num_experts_per_tok=2)]
    ids, mask = _prompts(rows=2, pads=(0, 3))
    for folder in folders:
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        want = _hf_generate(hf, ids, mask, max_new_tokens=8, do_sample=False).numpy()
        ours = AutoModelForCausalLM.from_pretrained(folder)
        np.testing.assert_array_equal(ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8), want)
        if "mixtral" in str(folder) and registry.implementation_name("moe_experts") == "cpu":
            graphs = ours.__dict__["_mindformers_decode_graphs"]
            assert any(graph.key[2] and graph.step.compiled for graph in graphs)


def test_concurrent_generate_calls_take_turns(models):
    """generate from two threads at once (MindSpore eager mode is not thread-safe): the calls take turns."""
    import threading

    ours, _ = models
    ids, mask = _prompts()
    want = [ours.generate(input_ids=ids[i:i + 1], max_new_tokens=10) for i in (0, 1)]
    got = {}
    threads = [threading.Thread(target=lambda i=i: got.setdefault(i, ours.generate(input_ids=ids[i:i + 1],
                                                                                max_new_tokens=10)))
               for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in (0, 1):
        np.testing.assert_array_equal(got[i], want[i])


@pytest.fixture(scope="module")
def long_context(tmp_path_factory):
    folder = make_hf_checkpoint(tmp_path_factory.mktemp("long_llama"), max_position_embeddings=512, seed=4)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(folder), hf


@pytest.mark.parametrize("kwargs", [dict(), dict(disable_compile=True), dict(num_beams=2)],
                         ids=["compiled", "eager", "beams"])
def test_generation_across_cache_growth_matches_hf(long_context, kwargs):
    """The static cache starts at prompt + 64 positions (128 here) and grows to the next bucket (256) while
    generating 150 tokens: HF's tokens all the same."""
    ours, hf = long_context
    ids, mask = _prompts(rows=2, pads=(0, 3))
    common = dict(max_new_tokens=150, min_new_tokens=150, do_sample=False, **kwargs)
    want = _hf_generate(hf, ids, mask, **{k: v for k, v in common.items() if k != "disable_compile"}).numpy()
    ours.__dict__.get("_mindformers_decode_graphs", []).clear()
    got = ours.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True, **common)
    np.testing.assert_array_equal(got.sequences, want)
    assert sorted(graph.key[1] for graph in ours.__dict__["_mindformers_decode_graphs"]) == [128, 256]


def test_cache_follows_generated_tokens_not_max_new_tokens(long_context, monkeypatch):
    """Rows that stop at EOS after 5 tokens use the same cache at max_new_tokens=256 as at 60,000 (it was
    sized for max_new_tokens: 61,440 positions); a cache past KEEP_CACHED_LENGTH is freed after generate."""
    from mindformers_hf.generation import runner

    ours, _ = long_context
    ids, mask = _prompts(rows=2, pads=(0, 3))
    free = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    eos = [int(t) for t in free[:, ids.shape[1] + 4]]
    ours.__dict__["_mindformers_decode_graphs"].clear()
    outs = [ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, eos_token_id=eos,
                          pad_token_id=0, return_dict_in_generate=True) for new in (256, 60_000)]
    np.testing.assert_array_equal(outs[0].sequences, outs[1].sequences)
    assert outs[0].sequences.shape[1] <= ids.shape[1] + 5
    assert [graph.key[1] for graph in ours.__dict__["_mindformers_decode_graphs"]] == [128]  # both used 128

    monkeypatch.setattr(runner, "KEEP_CACHED_LENGTH", 128)
    ours.__dict__["_mindformers_decode_graphs"].clear()
    ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=150, min_new_tokens=150, do_sample=False)
    assert [graph.key[1] for graph in ours.__dict__["_mindformers_decode_graphs"]] == [128]  # 256: dropped


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=2), dict(max_new_tokens=1)], ids=["greedy", "beams", "one"])
def test_returned_cache_is_hfs_and_continues(models, kwargs):
    """return_dict_in_generate's past_key_values holds what HF's does (prompt + generated - 1 positions, none of the
    compiled prefill's pad columns), is not overwritten by later generate calls, and a generate continuing from it
    gives HF's tokens."""
    ours, hf = models
    ids, mask = _prompts()
    kwargs = {"max_new_tokens": 6, "do_sample": False, "return_dict_in_generate": True, **kwargs}
    got = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
    want = _hf_generate(hf, ids, mask, **kwargs)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    cache, hf_cache = got.past_key_values, want.past_key_values
    assert cache.get_seq_length() == hf_cache.get_seq_length() == got.sequences.shape[1] - 1
    real = np.repeat(mask, kwargs.get("num_beams", 1), 0)[:, None, :, None].astype(bool)  # pad columns: any value
    before = [layer.keys.asnumpy().copy() for layer in cache.layers]
    ours.generate(input_ids=ids[::-1].copy(), attention_mask=mask[::-1].copy(), max_new_tokens=6)  # reuses graphs
    for mine, theirs, kept in zip(cache.layers, hf_cache.layers, before):
        np.testing.assert_array_equal(mine.keys.asnumpy(), kept)
        length = ids.shape[1]
        for a, b in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
            a, b = a.asnumpy(), b.numpy()
            np.testing.assert_allclose(np.where(real, a[:, :, :length], 0), np.where(real, b[:, :, :length], 0),
                                       atol=1e-4)
            # beam search: the running beams of a batch entry that already finished hold whatever ties gave (both
            # sides); compare the generated positions of the entries still running
            running = np.ones(len(a), bool) if "beam_indices" not in got else \
                np.repeat(got.beam_indices[:, -1] >= 0, kwargs["num_beams"])
            np.testing.assert_allclose(a[running, :, length:], b[running, :, length:], atol=1e-4)
    if kwargs.get("num_beams", 1) == 1:
        extended = np.concatenate([got.sequences, np.full((3, 2), 7)], 1)
        more = np.concatenate([mask, np.ones((3, extended.shape[1] - mask.shape[1]), np.int64)], 1)
        cont = ours.generate(input_ids=extended, attention_mask=more, past_key_values=cache, max_new_tokens=4)
        hf_cont = _hf_generate(hf, extended, more, past_key_values=hf_cache, max_new_tokens=4).numpy()
        np.testing.assert_array_equal(cont, hf_cont)
