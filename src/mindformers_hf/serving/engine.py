"""`LLMEngine`: requests in, tokens out, one step at a time, over our model and a paged KV cache.

A step asks the scheduler which sequences run and how many tokens each, runs the model -- every decode of
the step in one batched forward [B, 1], the prompts' first chunks batched by padded length, each later chunk in
its own forward [1, S] -- against the
`PagedCache`, then samples, detokenizes and checks stop conditions on the host. The engine is not
thread-safe: one thread drives it (the server's engine thread, or `LLM.generate`'s caller).

The decode forward is compiled per (batch bucket, context bucket) like generate's decode step
(generation/compile.py); padded rows write and read the scratch slot 0 only.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import mindspore as ms

from .. import runtime
from ..generation import logits_process as lp
from ..generation.compile import CompiledStep
from ..compiled_layers import compiled_layers, supports_compiled_layers
from ..generation.runner import (bucket_length, forward_kwargs, host_last_logits, layer_windows, position_ids_from_mask,
                                 prefill_length)
from ..masking_utils import MASK_VALUE
from .kv_cache import BlockAllocator, PagedCache
from .sampling_params import SamplingParams
from .scheduler import FINISHED, Scheduler, Sequence

# Tokens of KV cache the pool holds when --num-blocks is not given.
DEFAULT_KV_TOKENS = 8192


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: List[int]
    finish_reason: Optional[str] = None
    logprobs: Optional[list] = None       # [{token_id: logprob}] per output token (sampled one first)
    prompt_logprobs: Optional[list] = None  # the same per prompt token, None for the first


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: List[int]
    outputs: List[CompletionOutput] = field(default_factory=list)
    finished: bool = False


class LLMEngine:
    def __init__(self, model, tokenizer, max_num_seqs=32, max_num_batched_tokens=2048, block_size=16,
                 num_blocks=None, max_model_len=None, compile_decode=True, enable_prefix_caching=True):
        base = getattr(model, getattr(model, "base_model_prefix", ""), model)
        if not hasattr(base, "causal_masks"):
            raise NotImplementedError(f"serving: {type(model).__name__} is not supported by the engine yet "
                                      "(it needs per-layer prebuilt masks: LLaMA-shaped models only so far)")
        self.model, self.tokenizer = model, tokenizer
        self.compile_prefill = compile_decode and supports_compiled_layers(model)
        # chunks of more than one token are left-padded to a bucket when compiled; a model that refuses compiled
        # layers may count pad columns as positions (Qwen's dynamic NTK / logn limit), so its chunks run op by op
        self.compile_chunks = self.compile_prefill
        self.max_model_len = int(max_model_len or getattr(model.config, "max_position_embeddings", 2048))
        if num_blocks is None:
            num_blocks = -(-max(DEFAULT_KV_TOKENS, self.max_model_len) // block_size) + 1
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
        if max_num_batched_tokens < 1 or max_num_seqs < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        self.scheduler = Scheduler(self.allocator, max_num_seqs, max_num_batched_tokens)
        self.cache = PagedCache(self.allocator)
        self.windows = layer_windows(model.config)
        self.extra = forward_kwargs(model)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.requests = {}                        # request id -> [Sequence] (its choices)
        self.stats = {"prompt_tokens": 0, "generation_tokens": 0, "requests_finished": 0}
        self._eager_step = self._make_step()
        self.decode_step = CompiledStep(self._make_step(), f"{type(model).__name__} paged decode step") \
            if compile_decode else self._eager_step

    @classmethod
    def from_pretrained(cls, path, gguf_file=None, dtype="auto", **engine_kwargs):
        from .. import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)
        return cls(model, tokenizer, **engine_kwargs)

    # ------------------------------------------------------------------ requests
    def check_request(self, prompt_ids, params):
        """(token ids, max_tokens) for a request that can run, or ValueError naming what is wrong. Reads only
        the configuration, so the server calls it from its own thread to answer 400 before queueing."""
        params.validate()
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        vocab = self.model.config.vocab_size
        if any(t < 0 or t >= vocab for t in prompt_ids):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        room = min(self.max_model_len, self.allocator.num_usable * self.block_size) - len(prompt_ids)
        if room < 1:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; this model's context holds "
                             f"{self.max_model_len} and the KV cache {self.allocator.num_usable * self.block_size}")
        max_tokens = params.max_tokens if params.max_tokens is not None else room
        if max_tokens > room:
            raise ValueError(f"max_tokens={max_tokens} plus the prompt's {len(prompt_ids)} tokens exceeds the "
                             f"context length {len(prompt_ids) + room}")
        return prompt_ids, max_tokens

    def add_request(self, request_id, prompt_ids, params=None):
        """Queue a request; ValueError (naming the problem) when it can never run."""
        params = params or SamplingParams()
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        prompt_ids, max_tokens = self.check_request(prompt_ids, params)
        seqs = [Sequence(request_id, i, prompt_ids, params, max_tokens) for i in range(params.n)]
        self.requests[request_id] = seqs
        for seq in seqs:
            self.scheduler.add(seq)

    def abort_request(self, request_id):
        """Drop a request (client gone): its KV blocks are free when this returns."""
        for seq in self.requests.pop(request_id, []):
            if seq.status != FINISHED:
                self.scheduler.finish(seq, "abort")

    def has_unfinished_requests(self):
        return self.scheduler.has_unfinished()

    @property
    def num_waiting(self):
        return len(self.scheduler.waiting)

    # ------------------------------------------------------------------ one step
    def step(self):
        """Run one scheduled step; return a RequestOutput for each request whose state moved."""
        scheduled = self.scheduler.schedule()
        if not scheduled:
            return []
        with runtime.model_lock():
            decodes = [seq for seq, count in scheduled if count == 1]
            rows = {}   # seq id -> [count, V] logits (only the last position's unless prompt logprobs are asked)
            if decodes:
                rows.update(zip((s.seq_id for s in decodes), self._forward(decodes, 1, compiled=True)[:, None]))
            firsts = [(seq, count) for seq, count in scheduled if count > 1 and self.compile_prefill and
                      seq.num_computed == 0 and not self._wants_prompt_logprobs(seq)]
            for width in sorted({prefill_length(count) for _, count in firsts}):
                group = [(seq, count) for seq, count in firsts if prefill_length(count) == width]
                rows.update(zip((seq.seq_id for seq, _ in group), self._first_chunks(group, width)[:, None]))
            for seq, count in scheduled:
                if count > 1 and seq.seq_id not in rows:
                    every = self._wants_prompt_logprobs(seq)
                    # later chunks (after a first chunk or a prefix-cache hit): the compiled paged step, the
                    # chunk left-padded to a bucket (prompt logprobs need every position: op by op)
                    logits = self._forward([seq], count, compiled=self.compile_chunks and not every,
                                           every_position=every)[0]
                    rows[seq.seq_id] = logits if every else logits[None]
        touched = {}
        for seq, count in scheduled:
            if self._wants_prompt_logprobs(seq):
                self._record_prompt_logprobs(seq, rows[seq.seq_id])
            rows[seq.seq_id] = rows[seq.seq_id][-1]
            seq.num_computed += count
            self.scheduler.computed(seq)
            if seq.num_computed == seq.num_tokens:      # reached the end: this step's logits give a token
                if not seq.output_ids:
                    self.stats["prompt_tokens"] += len(seq.prompt_ids)
                self._append(seq, rows[seq.seq_id])
                touched[seq.request_id] = True
        return [self._output(request_id) for request_id in touched if request_id in self.requests]

    def _forward(self, seqs, length, compiled, every_position=False):
        """Logits [len(seqs), V] after processing each sequence's next `length` tokens ([len(seqs), length, V]
        with `every_position`)."""
        bs = self.block_size
        batch = len(seqs)
        compiled = compiled and len(self.cache) > 0   # the first forward creates the pools: eagerly
        if compiled:
            batch = min(1 << (batch - 1).bit_length(), max(self.scheduler.max_num_seqs, len(seqs)))
        # a compiled chunk is left-padded to prefill_length (few shapes); pad columns sit at the row's first
        # position, write the scratch slot 0 and are never read (their logits are dropped)
        width = prefill_length(length) if compiled and length > 1 else length
        pad = width - length
        context = max(s.num_computed + length for s in seqs)
        context = bucket_length(context) if compiled else -(-context // bs) * bs
        ids = np.zeros((batch, width), np.int64)
        positions = np.zeros((batch, width), np.int64)
        slots = np.zeros((batch, width), np.int32)
        context_slots = np.zeros((batch, context), np.int32)
        block_tables = np.zeros((batch, -(-context // bs)), np.int32)
        ends = np.zeros((batch, width), np.int64)       # last position each query may see
        for row, seq in enumerate(seqs):
            start = seq.num_computed
            span = np.arange(start, start + length)
            ids[row, pad:] = [seq.token_at(p) for p in span]
            positions[row, :pad], ends[row, :pad] = start, start
            positions[row, pad:] = span
            ends[row, pad:] = span
            blocks = np.asarray(seq.blocks, np.int32)
            known = np.arange(start + length)
            slots[row, pad:] = blocks[span // bs] * bs + span % bs
            context_slots[row, :start + length] = blocks[known // bs] * bs + known % bs
            block_tables[row, :len(blocks)] = blocks
        key_pos = np.arange(context)[None, None, :]
        allowed_all = key_pos <= ends[:, :, None]                        # [B, S, T]
        masks = []
        for window in self.windows.values():
            allowed = allowed_all if window is None else allowed_all & (key_pos > ends[:, :, None] - window)
            masks.append(np.where(allowed, np.float32(0.0), np.float32(MASK_VALUE))[:, None])
        args = [ms.Tensor(ids), ms.Tensor(positions), ms.Tensor(slots.reshape(-1)),
                ms.Tensor(context_slots.reshape(-1)), ms.Tensor(block_tables)] + [ms.Tensor(m) for m in masks]
        if every_position:
            return _host_float32(self._make_step(logits_to_keep=0)(*args))[:len(seqs)]
        step = self.decode_step if compiled else self._eager_step
        return host_last_logits(step(*args))[:len(seqs)]

    def _first_chunks(self, chunks, width):
        """[len(chunks), V] last-position logits of sequences' first chunks ([(seq, length)], every length padding
        to `width`), in one forward through the decoder layers' compiled graph (the one generate's prefill uses;
        `compiled_layers(model, "prefill")`), which attends within each chunk only -- right for a first chunk.
        Chunks are left-padded to `width` and the batch to a power of two (few compilations); pad columns and pad
        rows write the scratch slot 0 and are masked. One batched forward instead of one per prompt: the
        matrix products read each weight once for all of them."""
        bs, batch = self.block_size, 1 << (len(chunks) - 1).bit_length()
        present = np.zeros((batch, width), np.int64)
        ids = np.zeros((batch, width), np.int64)
        slots = np.zeros((batch, width), np.int32)
        for row, (seq, length) in enumerate(chunks):
            pad = width - length
            present[row, pad:] = 1
            ids[row, pad:] = [seq.token_at(p) for p in range(length)]
            span = np.arange(length)
            blocks = np.asarray(seq.blocks, np.int32)
            slots[row, pad:] = blocks[span // bs] * bs + span % bs
        query, key = np.arange(width)[:, None], np.arange(width)[None, :]
        allowed_all = (key <= query)[None] & (present[:, None, :] == 1)                     # [batch, W, W]
        masks = {}
        for name, window in self.windows.items():
            allowed = allowed_all if window is None else allowed_all & (key > query - window)[None]
            masks[name] = ms.Tensor(np.where(allowed, np.float32(0.0), np.float32(MASK_VALUE))[:, None])
        self.cache.defer_writes(ms.Tensor(slots.reshape(-1)))
        try:
            with compiled_layers(self.model, "prefill"):
                out = self.model(input_ids=ms.Tensor(ids), position_ids=ms.Tensor(position_ids_from_mask(present)),
                                 past_key_values=self.cache, use_cache=True, attention_mask=masks, **self.extra)
        except BaseException:
            self.cache.flush(write=False)
            raise
        self.cache.flush()
        return host_last_logits(out.logits if hasattr(out, "logits") else out[0])[:len(chunks)]

    def _make_step(self, **overrides):
        # a plain function (not a bound method): what mindspore.jit traces
        model, cache, windows, extra = self.model, self.cache, tuple(self.windows), {**self.extra, **overrides}

        def paged_step(input_ids, position_ids, slot_mapping, context_slots, block_tables, *masks):
            cache.set_step(slot_mapping, context_slots, block_tables)
            out = model(input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True,
                        attention_mask=dict(zip(windows, masks)), **extra)
            return out.logits if hasattr(out, "logits") else out[0]
        return paged_step

    # ------------------------------------------------------------------ host side of a token
    @staticmethod
    def _wants_prompt_logprobs(seq):
        return seq.params.prompt_logprobs is not None and len(seq.prompt_logprobs) < len(seq.prompt_ids)

    def _record_prompt_logprobs(self, seq, logits):
        """Logits [S, V] of positions num_computed.. of this step: position p scores prompt token p + 1."""
        for position, row in enumerate(logits, start=seq.num_computed):
            target = position + 1
            if target == len(seq.prompt_logprobs) and target < len(seq.prompt_ids):   # once, across preemptions
                seq.prompt_logprobs.append(_top_logprobs(row, seq.prompt_ids[target], seq.params.prompt_logprobs))

    def _append(self, seq, logits):
        params = seq.params
        token = _sample(logits, params, seq.rng)
        seq.output_ids.append(token)
        self.stats["generation_tokens"] += 1
        if params.logprobs is not None:
            seq.logprobs.append(_top_logprobs(logits, token, params.logprobs))
        reason = None
        if (token in self.eos_ids and not params.ignore_eos) or token in params.stop_token_ids:
            reason = "stop"
        elif len(seq.output_ids) >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
            reason = "length"
        self._detokenize(seq, reason is not None)
        if params.stop:
            cut = _find_stop(seq.text, params.stop)
            if cut is not None:
                seq.text, seq.stable_len, reason = seq.text[:cut], cut, "stop"
        if reason is not None:
            self.scheduler.finish(seq, reason)
            seq.stable_len = len(seq.text)

    def _detokenize(self, seq, final):
        text = self.tokenizer.decode(seq.output_ids, skip_special_tokens=seq.params.skip_special_tokens)
        seq.text = text
        if final:
            seq.stable_len = len(text)
            return
        stable = len(text) - 1 if text.endswith("\ufffd") else len(text)   # a multi-byte character half-way
        if seq.params.stop:                                                 # could be the start of a stop string
            stable -= max(len(s) for s in seq.params.stop) - 1
        seq.stable_len = max(seq.stable_len, min(stable, len(text)))

    def _output(self, request_id):
        seqs = self.requests[request_id]
        finished = all(s.status == FINISHED for s in seqs)
        out = RequestOutput(request_id, seqs[0].prompt_ids, [
            CompletionOutput(s.index, s.text[:s.stable_len], list(s.output_ids), s.finish_reason,
                             list(s.logprobs) if s.params.logprobs is not None else None,
                             list(s.prompt_logprobs) if s.params.prompt_logprobs is not None else None)
            for s in seqs],
            finished)
        if finished:
            del self.requests[request_id]
            self.stats["requests_finished"] += 1
        return out

    def kv_blocks(self):
        """(used, free) KV blocks, block 0 (scratch) not counted."""
        free = self.allocator.num_free
        return self.allocator.num_usable - free, free


def _host_float32(logits):
    return (logits if logits.dtype == ms.float32 else logits.astype(ms.float32)).asnumpy()


def _top_logprobs(logits, token, top):
    """{token: logprob, then the `top` most likely tokens: theirs} from one position's raw logits."""
    logprobs = lp._log_softmax(logits[None].astype(np.float64))[0]
    best = np.argsort(-logprobs, kind="stable")[:top]
    return {int(token): float(logprobs[token]), **{int(t): float(logprobs[t]) for t in best}}


def _sample(logits, params, rng):
    if params.greedy:
        return int(np.argmax(logits))
    scores = logits[None].astype(np.float32) / np.float32(params.temperature)
    if params.top_k and params.top_k > 0:
        scores = lp.TopKLogitsWarper(params.top_k).process(None, scores)
    if params.top_p < 1.0:
        scores = lp.TopPLogitsWarper(params.top_p).process(None, scores)
    probs = lp.softmax(scores)[0].astype(np.float64)
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))


def _find_stop(text, stops):
    hits = [text.find(s) for s in stops]
    hits = [h for h in hits if h >= 0]
    return min(hits) if hits else None


def _eos_ids(model, tokenizer):
    ids = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                  getattr(model.config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids
