"""KV caches with transformers 5's surface: `DynamicCache` grows by concatenation; `StaticCache` writes into
preallocated buffers. Both take `config=` (accepted for the signature: every layer caches all its positions and
the attention masks apply sliding windows, so outputs equal transformers' per-layer-type caches),
`get_seq_length()`, `crop(-n)`, `batch_repeat_interleave`, `batch_select_indices`, `reorder_cache` and
`copy.deepcopy`; a forward given one writes into it and returns it, and `generate(past_key_values=cache)` extends
it (generation/runner.py)."""
import mindspore as ms
from mindspore import ops

from .utils import warn_once


def default_use_cache(model, use_cache):
    """transformers' default for a forward's `use_cache`: the config's (true unless set otherwise), so a forward
    returns a DynamicCache -- except while training, where a cache nobody reads would only hold memory (and a
    cache passed in is written and returned whatever use_cache says, as in transformers)."""
    if use_cache is not None:
        return use_cache
    return bool(getattr(model.config, "use_cache", True)) and not getattr(model, "training", False)


def _check_crop(tokens_to_remove, kind):
    """transformers 5: `crop(-n)` drops the last n positions; a positive value (the 4.x "keep this many") raises."""
    if tokens_to_remove > 0:
        raise ValueError(f"Calling `crop` with a positive value (`{tokens_to_remove}`) is not supported. Please use a "
                         f"negative integer to remove that number of tokens from the {kind} instead.")
    return -int(tokens_to_remove)


class _Layer:
    """transformers 5's `cache.layers[i]`: that layer's `keys` / `values` (None until the layer is written)."""

    def __init__(self, cache, layer_idx):
        self._cache, self._idx = cache, layer_idx

    @property
    def keys(self):
        return self._cache._layer_states(self._idx)[0]

    @property
    def values(self):
        return self._cache._layer_states(self._idx)[1]

    @property
    def is_initialized(self):
        return self.keys is not None


class _CacheBase:
    """What both caches share: the layer views and the HF properties derived from the stored states."""
    is_paged = False  # serving's PagedCache says True: attention then reads its block pool in place

    def _layer_states(self, layer_idx):
        if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
            return None, None
        length = self.get_seq_length(layer_idx)
        keys, values = self.key_cache[layer_idx], self.value_cache[layer_idx]
        return (keys, values) if keys.shape[2] == length else (keys[:, :, :length], values[:, :, :length])

    @property
    def layers(self):
        return [_Layer(self, i) for i in range(len(self.key_cache))]

    def __len__(self):
        return len(self.key_cache)

    def __iter__(self):  # transformers 5 yields (keys, values, sliding window tensor or None) per layer
        for layer in self.layers:
            yield layer.keys, layer.values, None

    @property
    def is_initialized(self):
        return len(self.key_cache) > 0 and all(k is not None for k in self.key_cache)

    @property
    def batch_size(self):
        sizes = {k.shape[0] for k in self.key_cache if k is not None}
        if len(sizes) > 1:
            raise ValueError(f"The batch size is not consistent across layers: {sorted(sizes)}")
        return sizes.pop() if sizes else -1

    @property
    def max_batch_size(self):
        return self.batch_size

    def __repr__(self):
        return f"{type(self).__name__}(layers={len(self)}, seq_length={self.get_seq_length()})"


class DynamicCache(_CacheBase):
    is_compileable = False
    is_static = False

    def __init__(self, ddp_cache_data=None, config=None, offloading=False, offload_only_non_sliding=False):
        if offloading:
            warn_once("DynamicCache(offloading=True) is accepted for compatibility and ignored: the cache stays where "
                      "the model runs")
        self.key_cache = []
        self.value_cache = []
        for layer_idx, states in enumerate(ddp_cache_data or ()):
            self.update(states[0], states[1], layer_idx)

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        """Append this step's [B, KV, S, D] keys/values; return the whole [B, KV, T, D] history."""
        if layer_idx == len(self.key_cache):
            self.key_cache.append(key_states)
            self.value_cache.append(value_states)
        else:
            self.key_cache[layer_idx] = ops.cat((self.key_cache[layer_idx], key_states), 2)
            self.value_cache[layer_idx] = ops.cat((self.value_cache[layer_idx], value_states), 2)
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def get_seq_length(self, layer_idx=0):
        if layer_idx >= len(self.key_cache):
            return 0
        return self.key_cache[layer_idx].shape[2]

    def get_max_length(self, layer_idx=None):
        return -1  # no limit, as transformers' dynamic layers report

    def get_max_cache_shape(self, layer_idx=0):
        return -1

    def reorder_cache(self, beam_idx):
        """Select batch rows (beam search)."""
        self.key_cache = [ops.gather(k, beam_idx, 0) for k in self.key_cache]
        self.value_cache = [ops.gather(v, beam_idx, 0) for v in self.value_cache]

    def batch_select_indices(self, indices):
        self.reorder_cache(ms.Tensor(_as_index_list(indices), ms.int32))

    def batch_repeat_interleave(self, repeats):
        """Each batch row `repeats` times in a row (as torch's repeat_interleave on dim 0)."""
        if self.key_cache:
            rows = [r for r in range(self.key_cache[0].shape[0]) for _ in range(repeats)]
            self.reorder_cache(ms.Tensor(rows, ms.int32))

    def crop(self, tokens_to_remove):
        remove = _check_crop(tokens_to_remove, "cache")
        if remove:
            self.key_cache = [k[:, :, :max(k.shape[2] - remove, 0)] for k in self.key_cache]
            self.value_cache = [v[:, :, :max(v.shape[2] - remove, 0)] for v in self.value_cache]

    def reset(self):
        self.key_cache, self.value_cache = [], []


def _as_index_list(indices):
    from . import tensor_io

    if tensor_io.kind_of(indices):
        indices = tensor_io.to_numpy(indices)
    return [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]


class StaticCache(_CacheBase):
    """Preallocated KV cache: per layer [B, heads, max_cache_len, D] buffers written in place.

    Two ways to write it. generate's compiled decode step (generation/runner.py) sets the write positions with
    `set_cache_position` before each forward; `update` then writes there and returns the whole buffers, so
    attention reads all `max_cache_len` slots and the step's mask hides the ones not yet written -- fixed shapes,
    so one compiled graph serves every token (generate grows by moving to a longer cache: `fill_from`). A plain
    forward given a StaticCache (transformers 5's `StaticCache(config=, max_cache_len=)`) sets no positions:
    `update` appends after what the layer holds and returns the filled part, as a DynamicCache would.
    Buffers are MindSpore Parameters because graph mode only updates Parameters in place. Each layer's buffer
    takes its batch size (unless `max_batch_size` was given), head count and head size from the first
    keys/values written to it (`allocate`), so layers that cache other shapes (latent attention) work too.
    """

    is_static = True
    is_compileable = True

    def __init__(self, config=None, max_cache_len=None, offloading=False, offload_only_non_sliding=True,
                 max_batch_size=None, dtype=None, **kwargs):
        if max_cache_len is None:
            raise ValueError("StaticCache needs max_cache_len: the most positions it holds")
        if offloading:
            warn_once("StaticCache(offloading=True) is accepted for compatibility and ignored: the cache stays where "
                      "the model runs")
        self._batch = max_batch_size if max_batch_size is not None else kwargs.get("batch_size")  # 4.x keywords
        self.max_cache_len = int(max_cache_len)
        self.dtype = dtype
        self.key_cache, self.value_cache = [], []
        self._seq_length = 0          # positions filled by generate's positioned writes, tracked on the host
        self._filled = {}             # layer -> positions held after appending writes (plain forwards)
        self._cache_position = None   # [S] int32 positions the next positioned update writes
        self._indices = {}            # heads -> [B, heads, S, 3] scatter indices for the current positions
        self._grids = {}              # heads -> [B, heads, 1, 2] (row, head) pairs, built once
        self._uid = StaticCache._count = getattr(StaticCache, "_count", 0) + 1

    @property
    def max_batch_size(self):
        return self._batch if self._batch is not None else -1

    # ------------------------------------------------------------------ allocation
    def allocate(self, layer_idx, key_states, value_states):
        """Create layer `layer_idx`'s zero buffers shaped after these [B, heads, S, D] keys/values."""
        if self._batch is None:
            self._batch = key_states.shape[0]
        while len(self.key_cache) <= layer_idx:
            self.key_cache.append(None)
            self.value_cache.append(None)
        for store, states, kind in ((self.key_cache, key_states, "k"), (self.value_cache, value_states, "v")):
            shape = (self._batch, states.shape[1], self.max_cache_len, states.shape[3])
            store[layer_idx] = self._parameter(ops.zeros(shape, states.dtype), kind, layer_idx)

    def _parameter(self, value, kind, layer_idx):
        return ms.Parameter(value, name=f"static_cache{self._uid}.{kind}{layer_idx}", requires_grad=False)

    def _grid(self, heads):
        if heads not in self._grids:
            import numpy as np

            rows, cols = np.meshgrid(np.arange(self._batch), np.arange(heads), indexing="ij")
            grid = np.stack((rows, cols), -1).astype(np.int32).reshape(self._batch, heads, 1, 2)
            self._grids[heads] = ms.Tensor(grid)
        return self._grids[heads]

    def fill_from(self, cache):
        """Copy the S positions another cache holds into positions 0..S-1: a DynamicCache's [B, heads, S, D]
        layers after a prefill, or a shorter StaticCache's filled part when generation outgrows it."""
        length = cache.get_seq_length()
        self.set_cache_position(ops.arange(length, dtype=ms.int32))
        for layer_idx, (keys, values) in enumerate(zip(cache.key_cache, cache.value_cache)):
            if keys.shape[2] != length:
                keys, values = keys[:, :, :length], values[:, :, :length]
            if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
                self.allocate(layer_idx, keys, values)
            self.update(keys, values, layer_idx)
        self._seq_length, self._filled = length, {}

    # ------------------------------------------------------------------ per forward
    def set_cache_position(self, cache_position):
        """The [S] int32 slots the next forward writes (traced as an input when the step is compiled); None goes
        back to appending."""
        self._cache_position = cache_position
        self._indices = {}

    def _scatter_indices(self, heads, positions):
        length = positions.shape[0]
        return ops.cat((self._grid(heads).broadcast_to((self._batch, heads, length, 2)),
                        positions.reshape(1, 1, length, 1).broadcast_to((self._batch, heads, length, 1))), -1)

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        """Write this step's [B, heads, S, D] keys/values: at the set positions, returning the full buffers, or
        after what the layer holds, returning the filled part."""
        if self._cache_position is None:
            return self._append(key_states, value_states, layer_idx)
        if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
            raise RuntimeError("StaticCache layer %d has no buffers: fill it from a prefill first" % layer_idx)
        keys, values = self.key_cache[layer_idx], self.value_cache[layer_idx]
        for buffer, states in ((keys, key_states), (values, value_states)):
            heads = states.shape[1]
            if heads not in self._indices:
                self._indices[heads] = self._scatter_indices(heads, self._cache_position)
            ops.scatter_nd_update(buffer, self._indices[heads], states)
        return keys, values

    def _append(self, key_states, value_states, layer_idx):
        if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
            self.allocate(layer_idx, key_states, value_states)
        start = self.get_seq_length(layer_idx)
        end = start + key_states.shape[2]
        if end > self.max_cache_len:
            raise ValueError(f"StaticCache holds max_cache_len={self.max_cache_len} positions; {end} are needed (make "
                             "the cache longer)")
        if key_states.shape[0] != self._batch:
            raise ValueError(f"StaticCache was allocated for batch size {self._batch}, got keys for "
                             f"{key_states.shape[0]}")
        positions = ops.arange(start, end, dtype=ms.int32)
        keys, values = self.key_cache[layer_idx], self.value_cache[layer_idx]
        ops.scatter_nd_update(keys, self._scatter_indices(key_states.shape[1], positions), key_states)
        ops.scatter_nd_update(values, self._scatter_indices(value_states.shape[1], positions), value_states)
        self._filled[layer_idx] = end
        return keys[:, :, :end], values[:, :, :end]

    # ------------------------------------------------------------------ HF surface
    def get_seq_length(self, layer_idx=0):
        return self._filled.get(layer_idx, self._seq_length)

    def get_max_cache_shape(self, layer_idx=0):
        return self.max_cache_len

    def get_max_length(self, layer_idx=None):
        return self.max_cache_len

    def crop(self, tokens_to_remove):
        """Forget the last n positions (the buffers keep them; the next writes overwrite them)."""
        remove = _check_crop(tokens_to_remove, "cache")
        self._filled = {i: max(self.get_seq_length(i) - remove, 0) for i in range(len(self.key_cache))}
        self._seq_length = max(self._seq_length - remove, 0)

    def reset(self):
        for store in (self.key_cache, self.value_cache):
            for buffer in store:
                if buffer is not None:
                    ops.assign(buffer, ops.zeros_like(buffer))
        self._seq_length, self._filled = 0, {}

    def reorder_cache(self, beam_idx):
        """Select batch rows in place (beam search): buffers keep their identity, so compiled steps stay valid."""
        for store in (self.key_cache, self.value_cache):
            for buffer in store:
                if buffer is not None:
                    ops.assign(buffer, ops.gather(buffer, beam_idx, 0))

    def _reallocate_rows(self, rows):
        """New buffers holding these batch rows (the batch size changes, so the buffers cannot stay)."""
        index = ms.Tensor(rows, ms.int32)
        for store, kind in ((self.key_cache, "k"), (self.value_cache, "v")):
            for i, buffer in enumerate(store):
                if buffer is not None:
                    store[i] = self._parameter(ops.gather(buffer, index, 0), kind, i)
        self._batch, self._grids, self._indices = len(rows), {}, {}

    def batch_repeat_interleave(self, repeats):
        if self._batch is not None and self.key_cache:
            self._reallocate_rows([r for r in range(self._batch) for _ in range(repeats)])

    def batch_select_indices(self, indices):
        if self.key_cache:
            self._reallocate_rows(_as_index_list(indices))

class EncoderDecoderCache:
    """transformers' EncoderDecoderCache: the decoder's self-attention cache grows each step; the
    cross-attention keys/values come from the encoder output, are written once (at the first decoder call)
    and read on every later step (`is_updated[layer]`)."""

    def __init__(self, self_attention_cache=None, cross_attention_cache=None):
        self.self_attention_cache = self_attention_cache if self_attention_cache is not None else DynamicCache()
        self.cross_attention_cache = cross_attention_cache if cross_attention_cache is not None else DynamicCache()
        self.is_updated = {}

    def get_seq_length(self, layer_idx=0):
        return self.self_attention_cache.get_seq_length(layer_idx)

    def __len__(self):
        return len(self.self_attention_cache)

    def reorder_cache(self, beam_idx):
        self.self_attention_cache.reorder_cache(beam_idx)
        self.cross_attention_cache.reorder_cache(beam_idx)
