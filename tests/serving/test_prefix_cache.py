"""Automatic prefix caching (vLLM's): full blocks are shared by hash chain, reference-counted, evicted least
recently freed first; outputs are the same with and without it; /metrics counts the hits."""
import http.client

import pytest

from mindformers_hf.serving import LLM, SamplingParams
from mindformers_hf.serving.kv_cache import BlockAllocator

SYSTEM = "You are a helpful assistant. Answer in French, briefly, and never use more than ten words. "
QUESTIONS = ["The capital of France", "def add(a, b):", "Once upon a time there was", "héllo wörld"]


def test_allocator_shares_full_blocks_by_hash_chain_and_evicts_lru():
    alloc = BlockAllocator(8, 4, enable_prefix_caching=True)
    tokens = list(range(10))                       # two full blocks and a partial one
    hashes = alloc.block_hashes(tokens, [])
    assert len(hashes) == 2
    other = alloc.block_hashes([99] + tokens[1:], [])
    assert other[0] != hashes[0] and other[1] != hashes[1]      # the chain: block 1 differs via block 0
    a = alloc.allocate(3)
    alloc.register(a[:2], hashes)
    assert alloc.lookup(hashes, 2) == a[:2] and alloc.lookup(hashes, 1) == a[:1] and alloc.lookup(other, 2) == []
    alloc.take(a[:2])                                           # a second sequence shares them
    alloc.free(a)
    assert alloc.num_free == 7 - 2                              # still held by the second sequence
    alloc.free(a[:2])
    assert alloc.num_free == 7 and alloc.num_cached == 2        # free, but still cached
    fresh = alloc.allocate(5)                                   # never-cached blocks go first
    assert not set(fresh) & set(a[:2]) and alloc.num_cached == 2
    first = alloc.allocate(1)                                   # then the least recently freed: a[1] (tail first)
    assert first == [a[1]] and alloc.lookup(hashes, 2) == [a[0]]
    assert alloc.num_free == 1 and alloc.num_idle([a[0]]) == 1
    alloc.take([a[0]])
    assert alloc.num_free == 0


def test_disabled_allocator_caches_nothing():
    alloc = BlockAllocator(8, 4)
    hashes = alloc.block_hashes(list(range(8)), [])
    blocks = alloc.allocate(2)
    alloc.register(blocks, hashes)
    alloc.free(blocks)
    assert alloc.num_cached == 0 and alloc.lookup(hashes, 2) == []


@pytest.fixture(scope="module")
def tiny(chat_llama):
    from mindformers_hf import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(chat_llama), AutoTokenizer.from_pretrained(chat_llama)


def _run(model, tokenizer, caching, prompts, params, **kw):
    llm = LLM(model, tokenizer, block_size=4, max_num_batched_tokens=16, enable_prefix_caching=caching, **kw)
    # one at a time, so later prompts find the system prompt's blocks cached by earlier ones
    outs = [llm.generate(p, params)[0] for p in prompts]
    return llm.engine, outs


def test_outputs_equal_with_and_without_prefix_caching(tiny):
    model, tokenizer = tiny
    prompts = [SYSTEM + q for q in QUESTIONS] + [SYSTEM + QUESTIONS[0]]   # the last one entirely cached
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=1)
    plain, want = _run(model, tokenizer, False, prompts, params)
    cached, got = _run(model, tokenizer, True, prompts, params)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]
    assert [o.outputs[0].text for o in got] == [o.outputs[0].text for o in want]
    for g, w in zip(got, want):    # the same math in another order (op by op vs the compiled first chunk)
        for gl, wl in zip(g.outputs[0].logprobs, w.outputs[0].logprobs):
            assert gl.keys() == wl.keys() and max(abs(gl[t] - wl[t]) for t in gl) < 1e-4
    sys_ids = tokenizer(SYSTEM)["input_ids"]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    common = [next(i for i, (a, b) in enumerate(zip(ids[0] + [-1], p + [-2])) if a != b) for p in ids[1:]]
    assert min(common) >= len(sys_ids) - 1
    # prompt 0 misses; each later prompt hits its common full blocks with an earlier one (the system
    # prompt's), the repeated one every full block but the one holding its last token
    expected_hits = sum(min(c, len(p) - 1) // 4 * 4 for c, p in zip(common, ids[1:]))
    assert cached.allocator.hits == expected_hits > 0
    assert cached.allocator.queries == sum(len(p) for p in ids)
    assert plain.allocator.queries == plain.allocator.hits == plain.allocator.num_cached == 0
    assert cached.kv_blocks()[0] == 0                           # cached blocks count as free


def test_preemption_and_eviction_keep_greedy_outputs(tiny):
    """A pool too small for all sequences: cached blocks are evicted and preempted sequences recomputed
    (finding their own prompt blocks again); tokens equal the run without caching."""
    model, tokenizer = tiny
    prompts = [SYSTEM + q for q in QUESTIONS]
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    outs = {}
    for caching in (False, True):
        llm = LLM(model, tokenizer, block_size=4, max_num_batched_tokens=16, num_blocks=40,
                  enable_prefix_caching=caching)
        outs[caching] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        assert llm.engine.scheduler.num_preemptions > 0 and llm.engine.kv_blocks()[0] == 0
    assert outs[True] == outs[False]
    assert llm.engine.allocator.hits > 0


def _metric(served, name):
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(f"mindformers_hf:{name} ")))


def test_shared_system_prompt_blocks_are_reused_and_counted_in_metrics(served):
    from .conftest import MODEL_NAME

    block = served.engine.block_size
    messages = lambda q: [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]  # noqa: E731
    ids = [served.tokenizer(served.tokenizer.apply_chat_template(messages(q), tokenize=False,
                                                                 add_generation_prompt=True),
                            add_special_tokens=False)["input_ids"] for q in QUESTIONS[:2]]
    common = next(i for i, (a, b) in enumerate(zip(ids[0], ids[1])) if a != b)
    hits, queries = _metric(served, "prefix_cache_hits_total"), _metric(served, "prefix_cache_queries_total")
    texts = []
    for q in QUESTIONS[:2]:
        resp = served.client().chat.completions.create(model=MODEL_NAME, messages=messages(q), max_tokens=4,
                                                       temperature=0)
        texts.append(resp.choices[0].message.content)
    assert _metric(served, "prefix_cache_queries_total") - queries == len(ids[0]) + len(ids[1])
    # the first request may find blocks of earlier tests; the second finds at least the system prompt's
    assert _metric(served, "prefix_cache_hits_total") - hits >= common // block * block > 0
    assert _metric(served, "kv_blocks_cached") > 0 and _metric(served, "kv_blocks_used") == 0
    _, want = served.hf_greedy(ids[1], 4)
    assert texts[1] == want
