"""The model side of generation: prefill, one-token decode steps and beam reordering, on numpy in/out.

Two runners share one interface:
  - `StaticRunner`: prefill into a DynamicCache (the plain, parity-tested forward), copy it into a
    preallocated `StaticCache`, then decode with fixed shapes -- [B, 1] tokens against [B, heads, L, D]
    buffers, L a bucketed cache length -- so one compiled graph per (model, B, L) serves every token of
    every later `generate` call. L starts at room for the prompt and INITIAL_NEW_TOKENS and doubles (the
    filled positions copied over) when generation reaches it, up to the bucket of `max_length`: memory
    follows what is generated, not `max_new_tokens`. Attention masks are built per step on the host,
    [B, 1, 1, L] per layer type, by the rule of LlamaModel.causal_masks (`layer_windows`).
  - `DynamicRunner`: the growing cache, op by op; used for models without `causal_masks`, or when asked
    with cache_implementation="dynamic".
Every method that runs MindSpore holds the process-wide model lock (runtime.py) for its own duration only, so
the host work between tokens (logits processors, streamers, stopping criteria) runs without it.

The serving engine (serving/engine.py) shares the model-side rules through this module's public names:
`bucket_length`, `prefill_length`, `position_ids_from_mask`, `layer_windows`, `forward_kwargs` and
`host_last_logits`; compiled prefills go through `compiled_layers` (compiled_layers.py) in both.
"""
import inspect

import numpy as np
import mindspore as ms
from mindspore import ops

from .. import runtime
from ..cache_utils import DynamicCache, StaticCache
from ..compiled_layers import compiled_layers, supports_compiled_layers
from ..masking_utils import MASK_VALUE
from .compile import CompiledStep

# Cached graphs (and their cache buffers) per model: the oldest are dropped past this many. A graph longer than
# KEEP_CACHED_LENGTH is dropped when its generate ends, so a long generation's cache is freed afterwards (the
# next generation that long compiles its step again: once per call, small beside that many decode steps).
MAX_CACHED_GRAPHS = 8
KEEP_CACHED_LENGTH = 1024
# The static cache first holds the prompt and this many new tokens (rounded up to a bucket), then grows.
INITIAL_NEW_TOKENS = 64


def bucket_length(total):
    """Static cache length for `total` positions: powers of two from 64, then multiples of 1024 -- few
    distinct lengths (so few compiles) without attending over much more than needed."""
    if total <= 1024:
        return max(64, 1 << (int(total) - 1).bit_length())
    return -(-int(total) // 1024) * 1024


def grown_length(total, cap):
    """The cache length a generation that needs `total` positions grows to: the next power of two (from 64),
    never beyond `cap` (the bucket of max_length) -- few distinct lengths, at most twice the memory needed."""
    return min(max(64, 1 << (int(total) - 1).bit_length()), cap)


def prefill_length(length):
    """The prompt length a compiled prefill pads to (on the left, masked): multiples of 32 up to 512, then of
    128 -- one compilation (~0.5 s) per length, and at most 31 padded tokens up to 512."""
    step = 32 if length <= 512 else 128
    return -(-int(length) // step) * step


def position_ids_from_mask(mask):
    """transformers' rule: cumsum(mask) - 1, and 1 at padded positions."""
    positions = np.cumsum(mask, -1) - 1
    return np.where(mask == 0, 1, positions).astype(np.int64)


def layer_windows(config):
    """{layer type: sliding window or None}, the rule of LlamaModel.causal_masks (which the prefill uses):
    without `layer_types` one mask serves every layer, windowed when the config has a `sliding_window`
    (unless use_sliding_window is false); with `layer_types`, only "sliding_attention" layers are windowed."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        window = window if getattr(config, "use_sliding_window", True) else None
        return {"full_attention": window, "sliding_attention": window}
    windows = {"full_attention": None}
    if "sliding_attention" in layer_types:
        windows["sliding_attention"] = window
    return windows


def forward_kwargs(model):
    """Keyword arguments every generation forward passes: logits_to_keep=1 when the model takes it (only the last
    position's logits are read)."""
    params = inspect.signature(model.construct).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def position_offset(model):
    """[B, 1] int64 added to each decoded token's text position, or 0: an M-RoPE model (Qwen2-VL) keeps its
    prompt's `rope_deltas` on its base model after the prefill (HF's rule: an image's tokens take fewer positions
    than tokens, so the text after it continues from the largest position + 1)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    deltas = getattr(base, "rope_deltas", None)
    return 0 if deltas is None else np.asarray(deltas, np.int64).reshape(-1, 1)


def _repeat_offset(offset, repeats):
    return np.repeat(offset, repeats, 0) if repeats > 1 and not np.isscalar(offset) else offset


def _last_logits(outputs):
    return host_last_logits(outputs.logits if hasattr(outputs, "logits") else outputs[0])


def host_last_logits(logits):
    """[B, S, V] MindSpore logits -> the last position's [B, V] float32 numpy (sliced in numpy: a MindSpore
    slice costs milliseconds per token)."""
    if logits.dtype != ms.float32:
        logits = logits.astype(ms.float32)
    return logits.asnumpy()[:, -1, :]


class DynamicRunner:
    """Op by op; `cache`: the caller's cache (`generate(past_key_values=...)`), extended in place -- the prefill
    feeds only the prompt tokens it does not hold yet, so a prefilled prefix or an earlier turn is reused."""
    compiled = False
    prefill_inputs = {}  # keyword inputs of the prompt's forward only (generate sets them: `_prefill_inputs`)

    def __init__(self, model, cache=None, output_hidden_states=False):
        self.model = model
        self.cache = cache
        self.offset = 0
        self.extra = forward_kwargs(model)
        # generate(output_hidden_states=True): each forward's hidden states, float32 numpy [B, S, hidden] per layer
        self.hidden_states = None
        if output_hidden_states:
            self.extra["output_hidden_states"] = True

    def _logits(self, out):
        if self.extra.get("output_hidden_states"):
            self.hidden_states = tuple(h.astype(ms.float32).asnumpy() for h in out.hidden_states)
        return _last_logits(out)

    @runtime.serialized
    def prefill(self, input_ids, attention_mask):
        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config)
        past = self.cache.get_seq_length()
        if past >= input_ids.shape[1]:
            raise ValueError(f"generate: past_key_values already holds {past} positions, but input_ids have "
                             f"{input_ids.shape[1]}: pass the whole sequence (cached tokens and the new ones)")
        # a model whose prompt positions come from its inputs (CogVLM2's token types) derives them itself
        positions = None if getattr(self.model, "_positions_from_inputs", False) and past == 0 else \
            ms.Tensor(position_ids_from_mask(attention_mask)[:, past:])
        out = self.model(input_ids=ms.Tensor(input_ids[:, past:]), attention_mask=ms.Tensor(attention_mask),
                         position_ids=positions,
                         past_key_values=self.cache, use_cache=True, **self.prefill_inputs, **self.extra)
        self.offset = position_offset(self.model)
        return self._logits(out)

    def expand(self, repeats):
        if repeats > 1:
            self.cache.batch_repeat_interleave(repeats)
        self.offset = _repeat_offset(self.offset, repeats)

    @runtime.serialized
    def step(self, tokens, attention_mask):
        positions = position_ids_from_mask(attention_mask)[:, -1:] + self.offset
        out = self.model(input_ids=ms.Tensor(tokens.reshape(-1, 1).astype(np.int64)),
                         attention_mask=ms.Tensor(attention_mask), position_ids=ms.Tensor(positions),
                         past_key_values=self.cache, use_cache=True, **self.extra)
        return self._logits(out)

    @runtime.serialized
    def reorder(self, rows):
        self.cache.reorder_cache(ms.Tensor(np.asarray(rows, np.int32)))
        self.offset = self.offset if np.isscalar(self.offset) else self.offset[np.asarray(rows)]

    def close(self):
        pass


class _Graph:
    """One model's decode step for one (batch, cache length): the cache buffers and the compiled step."""

    def __init__(self, model, batch, length, compile_step):
        self.key = (batch, length, compile_step)
        self.cache = StaticCache(max_batch_size=batch, max_cache_len=length)
        self.mask_keys = None
        extra = forward_kwargs(model)
        cache = self.cache

        def decode_step(input_ids, position_ids, cache_position, *masks):
            cache.set_cache_position(cache_position)
            out = model(input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True,
                        attention_mask=dict(zip(self.mask_keys, masks)), **extra)
            return out.logits if hasattr(out, "logits") else out[0]

        self.step = CompiledStep(decode_step, f"{type(model).__name__} decode step") if compile_step \
            else decode_step


def drop_decode_graphs(model):
    """Forget `model`'s pooled decode steps. A traced step replays the Python it saw when traced, so a change of
    the model's structure or of its Python-level switches (LoRA adapters added, switched, disabled, merged) must
    drop them; the next generate builds fresh ones."""
    model.__dict__.pop("_mindformers_decode_graphs", None)


class StaticRunner:
    prefill_inputs = {}  # as DynamicRunner's

    def __init__(self, model, compile_step=True):
        self.model = model
        self.offset = 0
        self.compile_step = compile_step
        self.extra = forward_kwargs(model)
        self.graph, self.repeats, self.pad = None, 1, 0
        self.windows = layer_windows(model.config)

    @staticmethod
    def supports(model):
        base = getattr(model, getattr(model, "base_model_prefix", ""), model)
        return hasattr(base, "causal_masks") and getattr(base, "static_cache_generation", True)

    @property
    def compiled(self):
        step = self.graph.step if self.graph is not None else None
        return isinstance(step, CompiledStep) and step.compiled

    # ------------------------------------------------------------------ the model's pool of decode graphs
    def _pool(self):
        """The model's idle decode graphs, least recently used first (two threads generating the same shape at
        once leave two graphs of that shape here, so neither recompiles the next time)."""
        return self.model.__dict__.setdefault("_mindformers_decode_graphs", [])

    def _checkout(self, batch, length):
        """A graph for (batch, length), taken out of the pool while this generate uses it: a concurrent generate
        of the same shape takes another one or builds its own instead of writing into these cache buffers."""
        pool, key = self._pool(), (batch, length, self.compile_step)
        for i in range(len(pool) - 1, -1, -1):
            if pool[i].key == key:
                return pool.pop(i)
        return _Graph(self.model, batch, length, self.compile_step)

    def _checkin(self, graph):
        if graph.key[1] > KEEP_CACHED_LENGTH:
            return  # dropped: a long generation's cache buffers are freed once it is done
        pool = self._pool()
        pool.append(graph)
        del pool[:-MAX_CACHED_GRAPHS]

    @runtime.serialized
    def close(self):
        """Give the graph back to the model's pool (generate's end, also on errors)."""
        if self.graph is not None:
            self._checkin(self.graph)
        self.dynamic = None

    # ------------------------------------------------------------------ generation
    @runtime.serialized
    def prefill(self, input_ids, attention_mask, max_length):
        """With compilation on, the decoder layers run as one compiled graph (`compiled_layers(model, "prefill")`)
        on the prompt left-padded to `prefill_length`; the pad columns stay masked in every later step."""
        self.batch, prompt_len = input_ids.shape
        compiled = self.compile_step and supports_compiled_layers(self.model)
        self.pad = prefill_length(prompt_len) - prompt_len if compiled else 0
        input_ids, attention_mask = self._padded(input_ids), self._padded(attention_mask)
        self.max_length = bucket_length(max_length + self.pad)
        self.length = grown_length(prompt_len + self.pad + INITIAL_NEW_TOKENS, self.max_length)
        self.dynamic = DynamicCache()
        with compiled_layers(self.model, "prefill" if compiled else None):
            out = self.model(input_ids=ms.Tensor(input_ids), attention_mask=ms.Tensor(attention_mask),
                             position_ids=ms.Tensor(position_ids_from_mask(attention_mask)),
                             past_key_values=self.dynamic, use_cache=True, **self.prefill_inputs, **self.extra)
        self.offset = position_offset(self.model)
        return _last_logits(out)

    @runtime.serialized
    def detached_cache(self):
        """What generation cached, as transformers' returned cache holds it -- a new DynamicCache of the real
        positions (the prefill's pad columns left out), copied out of the buffers the model's pool of decode graphs
        reuses, so that later generate calls cannot overwrite it."""
        source = self.graph.cache if self.graph is not None else self.dynamic
        length = source.get_seq_length()
        rows = None if self.graph is not None or self.repeats == 1 else \
            ms.Tensor(np.repeat(np.arange(self.batch), self.repeats).astype(np.int32))
        layers = []
        for keys, values in zip(source.key_cache, source.value_cache):
            keys, values = ops.deepcopy(keys[:, :, self.pad:length]), ops.deepcopy(values[:, :, self.pad:length])
            layers.append((keys, values) if rows is None else (ops.gather(keys, rows, 0), ops.gather(values, rows, 0)))
        return DynamicCache(layers)

    def _padded(self, columns):
        """[B, T] prompt ids or mask with the prefill's pad columns (zeros: masked) prepended."""
        return np.pad(columns, ((0, 0), (self.pad, 0))) if self.pad else columns

    def expand(self, repeats):
        """Repeat every row `repeats` times (num_return_sequences, beams). The move into the static cache
        waits for the first decode step, so a prefill-only call (max_new_tokens=1) never pays for it."""
        self.repeats = repeats
        self.offset = _repeat_offset(self.offset, repeats)

    def _to_static(self):
        rows = np.repeat(np.arange(self.batch), self.repeats)
        if self.repeats > 1:
            self.dynamic.reorder_cache(ms.Tensor(rows.astype(np.int32)))
        self.batch = len(rows)
        self.graph = self._checkout(self.batch, self.length)
        self.graph.cache.fill_from(self.dynamic)
        self.dynamic = None

    def _grow(self, total):
        """Move to a longer cache holding `total` positions: the filled ones are copied into the new buffers."""
        length = grown_length(total, self.max_length)
        if total > length:
            raise RuntimeError(f"generate: the static cache holds {self.max_length} positions, {total} needed")
        old, self.graph = self.graph, self._checkout(self.batch, length)
        self.graph.cache.fill_from(old.cache)
        self._checkin(old)
        self.length = length

    def _masks(self, attention_mask):
        """{layer type: [B, 1, 1, L] float32} for a new token at slot T-1 of a [B, T] padding mask. Built in
        numpy: a dozen eager mask ops per token cost more than the rest of the host work."""
        total = attention_mask.shape[1]
        key_pos = np.arange(self.length)
        allowed = (key_pos < total)[None, :] & np.pad(attention_mask, ((0, 0), (0, self.length - total))).astype(bool)
        out = {}
        for key, window in self.windows.items():
            keep = allowed if window is None else allowed & (key_pos > total - 1 - window)[None, :]
            out[key] = np.where(keep, np.float32(0.0), np.float32(MASK_VALUE)).reshape(self.batch, 1, 1, self.length)
        return out

    @runtime.serialized
    def step(self, tokens, attention_mask):
        if self.graph is None:
            self._to_static()
        attention_mask = self._padded(attention_mask)
        total = attention_mask.shape[1]
        if total > self.length:
            self._grow(total)
        masks = self._masks(attention_mask)
        self.graph.mask_keys = tuple(masks)
        positions = position_ids_from_mask(attention_mask)[:, -1:] + self.offset
        logits = self.graph.step(ms.Tensor(tokens.reshape(-1, 1).astype(np.int64)), ms.Tensor(positions),
                                 ms.Tensor(np.array([total - 1], np.int32)),
                                 *(ms.Tensor(m) for m in masks.values()))
        self.graph.cache._seq_length = total
        return host_last_logits(logits)

    @runtime.serialized
    def reorder(self, rows):
        if self.graph is None:
            self._to_static()
        self.graph.cache.reorder_cache(ms.Tensor(np.asarray(rows, np.int32)))
        self.offset = self.offset if np.isscalar(self.offset) else self.offset[np.asarray(rows)]
