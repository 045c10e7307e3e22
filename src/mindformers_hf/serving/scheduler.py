"""Continuous batching: which sequences run in the next step, and how many of their tokens.

Every sequence is seen the same way (vLLM v1's view): `num_computed` of its tokens (prompt + output so far)
have keys/values in the cache; a step processes the next tokens up to all of them, and when it reaches the
end the step's logits give the next output token. A prompt is that with many tokens (cut into chunks by
the per-step token budget: chunked prefill), a decode is that with one.

Each step serves the running sequences first, in arrival order, then admits waiting ones while
`max_num_seqs`, the token budget and free KV blocks allow. When a running sequence needs a block and none
is free, the most recently admitted running sequence is preempted by recompute: its blocks are freed and it
goes back to the front of the waiting queue, to be prefilled again (prompt and output so far) later.

With prefix caching (kv_cache.BlockAllocator), a sequence being admitted first takes the cached blocks that
hold the longest prefix of its tokens and starts with those tokens computed; `computed()` registers the
blocks a step has filled.
"""
import itertools
from collections import deque

import numpy as np

WAITING, RUNNING, FINISHED = "waiting", "running", "finished"


class Sequence:
    """One choice of one request: its tokens, cache blocks and decoding state."""

    _ids = itertools.count()

    def __init__(self, request_id, index, prompt_ids, params, max_tokens):
        self.seq_id = next(Sequence._ids)
        self.request_id, self.index = request_id, index
        self.prompt_ids = list(prompt_ids)
        self.output_ids = []
        self.params, self.max_tokens = params, max_tokens
        self.num_computed = 0
        self.blocks = []
        self.block_hashes = []                   # prefix-cache hash of each full block of tokens, in order
        self.num_cached_blocks = 0               # leading blocks registered in (or taken from) the prefix cache
        self.status = WAITING
        self.finish_reason = None
        self.text, self.stable_len = "", 0       # detokenized output; the part safe to show so far
        self.logprobs = []                       # per output token when params.logprobs is set
        self.prompt_logprobs = [None]            # per prompt token when params.prompt_logprobs is set
        seed = None if params.seed is None else params.seed + index
        self.rng = np.random.default_rng(seed)
        self.num_preemptions = 0

    @property
    def num_tokens(self):
        return len(self.prompt_ids) + len(self.output_ids)

    def token_at(self, position):
        n = len(self.prompt_ids)
        return self.prompt_ids[position] if position < n else self.output_ids[position - n]

    def slot(self, position, block_size):
        return self.blocks[position // block_size] * block_size + position % block_size


class Scheduler:
    def __init__(self, allocator, max_num_seqs, max_num_batched_tokens):
        self.allocator = allocator
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting, self.running = deque(), []
        self.num_preemptions = 0

    def add(self, seq):
        self.waiting.append(seq)

    def has_unfinished(self):
        return bool(self.waiting or self.running)

    def schedule(self):
        """[(sequence, number of tokens to process)] for the next step."""
        budget, scheduled, preempted = self.max_num_batched_tokens, [], False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            count = min(seq.num_tokens - seq.num_computed, budget)
            if not self._reserve(seq, count):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
                continue
            scheduled.append((seq, count))
            budget -= count
            i += 1
        while self.waiting and not preempted and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            count = self._admit(seq, budget)
            if not count:
                break
            self.waiting.popleft()
            seq.status = RUNNING
            self.running.append(seq)
            scheduled.append((seq, count))
            budget -= count
        return scheduled

    def _admit(self, seq, budget):
        """Give a waiting sequence its blocks -- the cached ones holding its longest cached prefix of full
        blocks (never its last token: a step must compute something to give logits), then new ones for this
        step's tokens; return that token count, or 0 when the blocks are not there."""
        allocator, size = self.allocator, self.allocator.block_size
        cached = []
        if allocator.enable_prefix_caching and seq.params.prompt_logprobs is None:  # those need every position
            tokens = seq.prompt_ids + seq.output_ids
            cached = allocator.lookup(allocator.block_hashes(tokens, seq.block_hashes), (seq.num_tokens - 1) // size)
        start = len(cached) * size
        count = min(seq.num_tokens - start, budget)
        needed = allocator.blocks_for(start + count) - len(cached)
        if needed > allocator.num_free - allocator.num_idle(cached):
            return 0
        allocator.take(cached)
        seq.blocks = cached + allocator.allocate(needed)
        seq.num_computed, seq.num_cached_blocks = start, len(cached)
        if allocator.enable_prefix_caching:
            allocator.queries += seq.num_tokens
            allocator.hits += start
        return count

    def computed(self, seq):
        """After a step advanced `seq.num_computed`: register its newly filled blocks in the prefix cache."""
        allocator = self.allocator
        full = seq.num_computed // allocator.block_size
        if allocator.enable_prefix_caching and full > seq.num_cached_blocks:
            tokens = (seq.prompt_ids + seq.output_ids)[:full * allocator.block_size]
            hashes = allocator.block_hashes(tokens, seq.block_hashes)
            allocator.register(seq.blocks[seq.num_cached_blocks:full], hashes[seq.num_cached_blocks:full])
            seq.num_cached_blocks = full

    def _reserve(self, seq, count):
        needed = self.allocator.blocks_for(seq.num_computed + count) - len(seq.blocks)
        if needed > self.allocator.num_free:
            return False
        seq.blocks += self.allocator.allocate(max(needed, 0))
        return True

    def _preempt(self, seq):
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed = 0
        seq.status = WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _release(self, seq):
        self.allocator.free(seq.blocks)
        seq.blocks, seq.num_cached_blocks = [], 0

    def finish(self, seq, reason):
        """Take a sequence out of the queues for good (done, or aborted) and free its blocks at once."""
        if seq.status == RUNNING:
            self.running.remove(seq)
        elif seq.status == WAITING:
            self.waiting.remove(seq)
        self._release(seq)
        seq.status, seq.finish_reason = FINISHED, reason
