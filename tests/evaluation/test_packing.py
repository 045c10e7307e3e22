"""Requests that share a context are scored in one packed row (evaluation/packing.py); each request's
log-likelihood and greedy flag must equal HF transformers' on the request's own row."""
import numpy as np
import pytest

from tests.conftest import make_hf_checkpoint
from tests.trainer.conftest import make_char_tokenizer

pytest.importorskip("lm_eval")

RNG = np.random.default_rng(0)
CONTEXTS = [RNG.integers(4, 40, size=n).tolist() for n in (9, 17, 5)]
# choices of 1-4 tokens (one shared with another choice but for its last token, one repeated), a context past
# max_length (left-truncated), and a context alone with its continuation
REQUESTS = [(c, RNG.integers(4, 40, size=k).tolist()) for c in CONTEXTS for k in (1, 3, 4, 2)]
REQUESTS += [(CONTEXTS[0], REQUESTS[2][1][:-1] + [5]), REQUESTS[1],
             (RNG.integers(4, 40, size=70).tolist(), [7, 8, 9]), ([11, 12], [13])]


def hf_scores(folder, requests, max_length):
    """Per request: HF's sum of log-softmax over the continuation on its own row, and whether greedy."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for context, continuation in requests:
        row = (context + continuation)[-(max_length + 1):][:-1]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row])).logits[0, -len(continuation):]
        logprobs = torch.log_softmax(logits, -1)
        target = torch.tensor(continuation)
        out.append((float(logprobs.gather(-1, target[:, None]).sum()), bool((logits.argmax(-1) == target).all())))
    return out


@pytest.mark.parametrize("config", [dict(config_class="LlamaConfig"),
                                    dict(config_class="MistralConfig", model_class="MistralForCausalLM",
                                         sliding_window=6)], ids=["llama", "mistral_window"])
def test_packed_requests_score_as_their_own_rows_in_hf(tmp_path, config):
    from mindformers_hf.evaluation import MindFormersLM
    from mindformers_hf.evaluation.packing import pack_requests

    folder = make_hf_checkpoint(tmp_path, vocab_size=40, seed=5, **config)
    make_char_tokenizer(folder)
    lm = MindFormersLM(pretrained=folder, dtype="float32", batch_size=3)
    shapes = []
    score_rows = lm._score_rows
    lm._score_rows = lambda rows, *args: shapes.append(len(rows)) or score_rows(rows, *args)
    got = lm._loglikelihood_tokens([(None, c, n) for c, n in REQUESTS], disable_tqdm=True)
    want = hf_scores(folder, REQUESTS, lm.max_length)
    for (got_ll, got_greedy), (want_ll, want_greedy) in zip(got, want):
        assert got_ll == pytest.approx(want_ll, abs=1e-4)
        assert got_greedy == want_greedy
    # one packed row per distinct context (the 70-token one alone, truncated), not one per distinct row
    rows = pack_requests(REQUESTS, lm.max_length)
    assert sorted(len(p.reads) for p in rows) == [1, 1, 4, 4, 6]
    assert sum(shapes) == 5


def test_packed_rows_stay_within_max_length():
    from mindformers_hf.evaluation.packing import pack_requests

    context = list(range(10))
    requests = [(context, [100 + i] * 5) for i in range(6)]  # 10 + 6 * 4 suffix tokens > 24
    rows = pack_requests(requests, max_length=24)
    assert all(len(p.tokens) <= 24 for p in rows) and len(rows) == 2
    assert sorted(i for p in rows for i, _ in p.reads) == list(range(6))
    assert [len(p.reads) for p in pack_requests(requests, 24, share=False)] == [1] * 6


def test_short_shared_prefixes_are_not_packed():
    """Rolling windows share only the prefix token: packing them would give one long row whose attention costs
    more than the rows it replaces, so each stays its own row; a context as long as its continuations is shared."""
    from mindformers_hf.evaluation.packing import pack_requests

    documents = [[1] + list(range(10 + i, 60 + i)) for i in range(3)]
    rolling = pack_requests([([0], doc) for doc in documents], max_length=1000)
    assert [len(p.reads) for p in rolling] == [1, 1, 1]
    questions = pack_requests([(list(range(20)), [100 + i, 200 + i]) for i in range(4)], max_length=1000)
    assert [len(p.reads) for p in questions] == [4]
