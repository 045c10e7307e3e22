"""KV caches. `DynamicCache` grows by concatenation, like transformers' DynamicCache."""
from mindspore import ops


class DynamicCache:
    def __init__(self):
        self.key_cache = []
        self.value_cache = []

    def update(self, key_states, value_states, layer_idx):
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

    def __len__(self):
        return len(self.key_cache)

    def reorder_cache(self, beam_idx):
        """Select batch rows (beam search)."""
        self.key_cache = [ops.gather(k, beam_idx, 0) for k in self.key_cache]
        self.value_cache = [ops.gather(v, beam_idx, 0) for v in self.value_cache]


class StaticCache:
    """Preallocated KV cache: per layer [B, heads, max_cache_len, D] buffers written in place, never regrown
    (generate grows by moving to a longer StaticCache: `fill_from`).

    Fixed shapes are what lets a compiled decode step be reused for every token (and across `generate`
    calls). Set the write positions with `set_cache_position` before a forward; `update` writes the new
    keys/values there and returns the whole buffers, so attention reads all `max_cache_len` slots and the
    attention mask must hide the ones not yet written. Buffers are MindSpore Parameters because graph mode
    only updates Parameters in place. Each layer's buffer takes its head count and head size from the first
    keys/values written to it (`allocate`), so layers that cache other shapes (latent attention) work too.
    """

    is_static = True

    def __init__(self, config=None, max_batch_size=None, max_cache_len=None, dtype=None, **kwargs):
        self.max_batch_size = max_batch_size if max_batch_size is not None else kwargs.get("batch_size")
        self.max_cache_len = max_cache_len
        if self.max_batch_size is None or self.max_cache_len is None:
            raise ValueError("StaticCache needs max_batch_size and max_cache_len")
        self.dtype = dtype
        self.key_cache, self.value_cache = [], []
        self._seq_length = 0          # positions filled so far, tracked on the host (no device read)
        self._cache_position = None   # [S] int32 positions the next update writes
        self._indices = {}            # heads -> [B, heads, S, 3] scatter indices for the current positions
        self._grids = {}              # heads -> [B, heads, 1, 2] (row, head) pairs, built once
        self._uid = StaticCache._count = getattr(StaticCache, "_count", 0) + 1

    # ------------------------------------------------------------------ allocation
    def allocate(self, layer_idx, key_states, value_states):
        """Create layer `layer_idx`'s zero buffers shaped after these [B, heads, S, D] keys/values."""
        import mindspore as ms

        while len(self.key_cache) <= layer_idx:
            self.key_cache.append(None)
            self.value_cache.append(None)
        for store, states, kind in ((self.key_cache, key_states, "k"), (self.value_cache, value_states, "v")):
            shape = (self.max_batch_size, states.shape[1], self.max_cache_len, states.shape[3])
            store[layer_idx] = ms.Parameter(ops.zeros(shape, states.dtype),
                                            name=f"static_cache{self._uid}.{kind}{layer_idx}", requires_grad=False)
        for heads in (key_states.shape[1], value_states.shape[1]):
            if heads not in self._grids:
                import numpy as np

                rows, cols = np.meshgrid(np.arange(self.max_batch_size), np.arange(heads), indexing="ij")
                grid = np.stack((rows, cols), -1).astype(np.int32).reshape(self.max_batch_size, heads, 1, 2)
                self._grids[heads] = ms.Tensor(grid)

    def fill_from(self, cache):
        """Copy the S positions another cache holds into positions 0..S-1: a DynamicCache's [B, heads, S, D]
        layers after a prefill, or a shorter StaticCache's filled part when generation outgrows it."""
        import mindspore as ms

        length = cache.get_seq_length()
        self.set_cache_position(ops.arange(length, dtype=ms.int32))
        for layer_idx, (keys, values) in enumerate(zip(cache.key_cache, cache.value_cache)):
            if keys.shape[2] != length:
                keys, values = keys[:, :, :length], values[:, :, :length]
            if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
                self.allocate(layer_idx, keys, values)
            self.update(keys, values, layer_idx)
        self._seq_length = length

    # ------------------------------------------------------------------ per forward
    def set_cache_position(self, cache_position):
        """The [S] int32 slots the next forward writes (traced as an input when the step is compiled)."""
        self._cache_position = cache_position
        self._indices = {}

    def _scatter_indices(self, heads, length):
        indices = self._indices.get(heads)
        if indices is None:
            grid = self._grids[heads]
            positions = self._cache_position.reshape(1, 1, length, 1)
            indices = ops.cat((grid.broadcast_to((self.max_batch_size, heads, length, 2)),
                               positions.broadcast_to((self.max_batch_size, heads, length, 1))), -1)
            self._indices[heads] = indices
        return indices

    def update(self, key_states, value_states, layer_idx):
        """Write this step's [B, heads, S, D] keys/values at the cache positions; return the full buffers."""
        if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
            raise RuntimeError("StaticCache layer %d has no buffers: fill it from a prefill first" % layer_idx)
        keys, values = self.key_cache[layer_idx], self.value_cache[layer_idx]
        length = key_states.shape[2]
        ops.scatter_nd_update(keys, self._scatter_indices(key_states.shape[1], length), key_states)
        ops.scatter_nd_update(values, self._scatter_indices(value_states.shape[1], length), value_states)
        return keys, values

    # ------------------------------------------------------------------ HF surface
    def get_seq_length(self, layer_idx=0):
        return self._seq_length

    def get_max_cache_shape(self, layer_idx=0):
        return self.max_cache_len

    def __len__(self):
        return len(self.key_cache)

    def reorder_cache(self, beam_idx):
        """Select batch rows in place (beam search): buffers keep their identity, so compiled steps stay valid."""
        for store in (self.key_cache, self.value_cache):
            for buffer in store:
                if buffer is not None:
                    ops.assign(buffer, ops.gather(buffer, beam_idx, 0))


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
