"""batch_size=auto / auto:N (evaluation/batch_size.py): HFLM's search from max_batch_size, halving, against an
estimate of each row's peak memory and half the memory available; results as with a fixed batch size."""
import pytest

pytest.importorskip("lm_eval")

from mindformers_hf.evaluation import batch_size as auto  # noqa: E402

REQUESTS = [(None, [5 + i % 7] * (12 + i), [9, 10 + i % 3]) for i in range(10)]


def scored_batches(lm):
    """Run REQUESTS; return (results, rows per forward)."""
    shapes = []
    score_rows = lm._score_rows
    lm._score_rows = lambda rows, *args: shapes.append(len(rows)) or score_rows(rows, *args)
    return lm._loglikelihood_tokens(REQUESTS, disable_tqdm=True), shapes


def test_largest_batch_halves_from_max_batch_size():
    assert auto.largest_batch(10, 64, budget=640) == 64
    assert auto.largest_batch(10, 64, budget=639) == 32
    assert auto.largest_batch(10, 48, budget=250) == 24
    assert auto.largest_batch(10, 64, budget=5) == 1  # never below one row
    assert auto.available_memory() > 0


def test_row_bytes_grow_with_width_keep_and_cache(char_llama_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(char_llama_dir)
    base = auto.row_bytes(config, 32, 1)
    assert auto.row_bytes(config, 512, 1) > 3 * auto.row_bytes(config, 256, 1)  # scores, masks: quadratic
    assert auto.row_bytes(config, 32, 8) - base == 7 * config.vocab_size * 12
    assert auto.row_bytes(config, 32, 1, cache=True) > base


def test_batch_size_auto_uses_the_largest_batch_that_fits(char_llama_dir, monkeypatch):
    from mindformers_hf.evaluation import MindFormersLM

    fixed, _ = scored_batches(MindFormersLM(pretrained=char_llama_dir, batch_size=1))
    lm = MindFormersLM(pretrained=char_llama_dir, batch_size="auto", max_batch_size=16)
    assert lm.batch_size == "auto"
    longest = auto.row_bytes(lm.config, 12 + 9 + 1, 2)  # the first (longest) row: 21 context tokens + 1
    monkeypatch.setattr(auto, "available_memory", lambda: 2 * 5 * longest)  # budget: 5 rows -> 16, 8, 4
    results, shapes = scored_batches(lm)
    assert shapes == [4, 4, 2]
    for (got, got_greedy), (want, want_greedy) in zip(results, fixed):
        assert got == pytest.approx(want, abs=1e-5) and got_greedy == want_greedy
    monkeypatch.setattr(auto, "available_memory", lambda: 0)
    assert scored_batches(lm)[1] == [1] * 10


def test_batch_size_auto_n_finds_the_size_again_n_times(char_llama_dir, monkeypatch):
    from mindformers_hf.evaluation import MindFormersLM

    lm = MindFormersLM(pretrained=char_llama_dir, batch_size="auto:2", max_batch_size=4)
    calls = []
    longest = auto.row_bytes(lm.config, 22, 2)
    monkeypatch.setattr(auto, "available_memory", lambda: calls.append(1) or 2 * 3 * longest)  # 3 rows: 2
    _, shapes = scored_batches(lm)
    # found again at the sixth row, whose shorter rows fit 4 (3 rows of the first one's width did not)
    assert len(calls) == 2 and shapes == [2, 2, 2, 4]


def test_generate_until_with_batch_size_auto(char_llama_dir):
    from lm_eval.api.instance import Instance

    from mindformers_hf.evaluation import MindFormersLM

    requests = [Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 5, "do_sample": False}),
                         0) for prompt in ("the quick", "a stitch in time", "all")]
    fixed = MindFormersLM(pretrained=char_llama_dir, batch_size=1).generate_until(requests, disable_tqdm=True)
    ours = MindFormersLM(pretrained=char_llama_dir, batch_size="auto").generate_until(requests, disable_tqdm=True)
    assert ours == fixed
