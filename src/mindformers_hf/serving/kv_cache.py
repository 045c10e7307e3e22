"""A paged KV cache: every layer's keys and values live in one pool of fixed-size blocks shared by all
sequences; each sequence owns a block table (the blocks holding its positions, in order).

`PagedCache` is what the model receives as `past_key_values` for one forward. Before the forward the engine
sets, on the host, where this step's new tokens go (`slot_mapping`, one pool slot per token), each row's
block table (`block_tables`, padded with the scratch block 0) and the same expanded to the slots each row reads
(`context_slots`). Attention that knows the cache is paged (LlamaAttention) calls `attend()`: the new
keys/values are scattered into the pool (reshape-and-cache) and `ops.paged_attention` reads each row's context
through its block table (a C++ kernel on CPU; the reference gathers). Other callers use `update()`, which
scatters and returns the rows' contexts gathered back into the [B, heads, T, D] layout. Either way the
step's attention mask (built by the engine) hides the padded positions.

A first chunk (the decoder layers' compiled prefill graph, one graph call per layer) defers its writes
(`defer_writes()`, then `flush()`): the pools are written after the forward by one compiled step for all layers.
Writing them between the layer graphs made each eager op wait for the graph before it (a 14-token prompt's
first chunk took twice as long).

Block 0 is never handed out: padded rows and padded context entries point at it.
"""
import hashlib
from collections import OrderedDict

import numpy as np
import mindspore as ms
from mindspore import ops

from .. import ops as fused
from ..generation.compile import CompiledStep


class OutOfBlocks(RuntimeError):
    pass


class BlockAllocator:
    """Hands out blocks and takes them back, with vLLM's automatic prefix caching when enabled: a block that a
    sequence has filled is registered under a hash of its tokens chained with the hash of the block before it
    (so equal hashes mean equal whole prefixes); blocks are reference-counted, and a later sequence whose
    prompt starts with the same full blocks takes them instead of computing them again. A block whose count
    drops to 0 stays cached but counts as free: it is reused (and forgotten) only when no never-cached free
    block is left, least recently freed first."""

    def __init__(self, num_blocks, block_size, enable_prefix_caching=False):
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is reserved), got {num_blocks}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._free = list(range(num_blocks - 1, 0, -1))  # pop() hands out low block numbers first
        self._evictable = OrderedDict()                   # cached blocks nobody holds, least recently freed first
        self._refs = [0] * num_blocks
        self._by_hash, self._hash_of = {}, {}             # block hash -> block, block -> its hash
        self.queries = self.hits = 0                      # prefix-cache lookups, in prompt tokens

    @property
    def num_free(self):
        return len(self._free) + len(self._evictable)

    @property
    def num_usable(self):
        return self.num_blocks - 1

    @property
    def num_cached(self):
        return len(self._by_hash)

    def allocate(self, count):
        if count > self.num_free:
            raise OutOfBlocks(f"{count} KV blocks needed, {self.num_free} free")
        out = []
        for _ in range(count):
            if self._free:
                block = self._free.pop()
            else:                                          # evict the least recently freed cached block
                block, _ = self._evictable.popitem(last=False)
                del self._by_hash[self._hash_of.pop(block)]
            self._refs[block] = 1
            out.append(block)
        return out

    def free(self, blocks):
        # last blocks first: a prefix's tail is evicted before its head, which more sequences share
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                if block in self._hash_of:
                    self._evictable[block] = None
                else:
                    self._free.append(block)

    def blocks_for(self, num_tokens):
        return -(-num_tokens // self.block_size)

    # ------------------------------------------------------------------ prefix caching
    def block_hashes(self, tokens, hashes):
        """Extend `hashes` (a sequence's chain so far) to cover every full block of `tokens`; return it."""
        size = self.block_size
        for i in range(len(hashes), len(tokens) // size):
            digest = hashlib.sha256(hashes[-1] if hashes else b"mindformers_hf prefix")
            digest.update(np.asarray(tokens[i * size:(i + 1) * size], np.int64).tobytes())
            hashes.append(digest.digest())
        return hashes

    def lookup(self, hashes, max_blocks):
        """The cached blocks holding the longest prefix of `hashes` (at most `max_blocks`), not yet taken."""
        found = []
        for digest in hashes[:max_blocks]:
            block = self._by_hash.get(digest) if self.enable_prefix_caching else None
            if block is None:
                break
            found.append(block)
        return found

    def num_idle(self, blocks):
        """How many of these cached blocks are counted as free now (taking them uses up free blocks)."""
        return sum(1 for block in blocks if self._refs[block] == 0)

    def take(self, blocks):
        """Hold cached blocks found by `lookup`."""
        for block in blocks:
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1

    def register(self, blocks, hashes):
        """Cache the full, computed blocks of a sequence (`blocks[i]` holds the tokens hashed as `hashes[i]`).
        A block whose prefix another block already caches (two sequences computed it at once) stays private."""
        if not self.enable_prefix_caching:
            return
        for block, digest in zip(blocks, hashes):
            if block not in self._hash_of and digest not in self._by_hash:
                self._by_hash[digest], self._hash_of[block] = block, digest


class PagedCache:
    """The per-layer pools ([num_blocks * block_size, heads, D] Parameters, allocated from the first keys and
    values written, so layers caching other shapes -- latent attention -- work too) and this step's slots."""

    is_static = True
    is_paged = True     # attention modules call attend() (ops.paged_attention) instead of update()

    def __init__(self, allocator):
        self.allocator = allocator
        self.num_slots = allocator.num_blocks * allocator.block_size
        self.key_cache, self.value_cache = [], []
        self.slot_mapping = None    # [N] int32: pool slot of each new token, row-major over [B, S]
        self.context_slots = None   # [B * T] int32: the slots each row attends to, in position order
        self.block_tables = None    # [B, M] int32: each row's blocks (M * block_size >= T), or None
        self._pending = None        # {layer: (keys, values)} while writes are deferred
        self._writer = None         # the compiled step flush() runs
        self._uid = PagedCache._count = getattr(PagedCache, "_count", 0) + 1

    def set_step(self, slot_mapping, context_slots, block_tables=None):
        """This step's [N] write slots, [B * T] read slots and [B, M] block tables (T comes from the shapes, so a
        compiled step's trace holds for every call of the same shapes). Without block tables (a first chunk
        left-padded inside its block), attend() gathers."""
        self.slot_mapping, self.context_slots, self.block_tables = slot_mapping, context_slots, block_tables

    def _allocate(self, layer_idx, key_states, value_states):
        while len(self.key_cache) <= layer_idx:
            self.key_cache.append(None)
            self.value_cache.append(None)
        for store, states, kind in ((self.key_cache, key_states, "k"), (self.value_cache, value_states, "v")):
            shape = (self.num_slots, states.shape[1], states.shape[3])
            store[layer_idx] = ms.Parameter(ops.zeros(shape, states.dtype), name=f"paged_cache{self._uid}.{kind}"
                                            f"{layer_idx}", requires_grad=False)

    def _write(self, key_states, value_states, layer_idx):
        """Scatter this step's [B, heads, S, D] keys/values into the layer's pools at `slot_mapping`."""
        if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
            self._allocate(layer_idx, key_states, value_states)
        for pool, states in ((self.key_cache[layer_idx], key_states), (self.value_cache[layer_idx], value_states)):
            rows = states.swapaxes(1, 2).reshape(-1, states.shape[1], states.shape[3])     # [B * S, heads, D]
            ops.scatter_update(pool, self.slot_mapping, rows.astype(pool.dtype))

    def defer_writes(self, slot_mapping):
        """Until `flush()`, `update()` keeps each layer's keys/values and returns them as its context: right for a
        first chunk, whose context is the chunk itself (`slot_mapping` gives where the chunk goes)."""
        self.set_step(slot_mapping, slot_mapping)
        self._pending = {}

    def flush(self, write=True):
        """Write the deferred keys/values of every layer into the pools, in one compiled step (or, after a forward
        that failed, drop them)."""
        pending, self._pending = self._pending, None
        if not pending or not write:
            return
        layers = sorted(pending)
        for layer_idx in layers:                 # pools are created eagerly, once
            if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
                self._allocate(layer_idx, *pending[layer_idx])
        if self._writer is None or self._writer[0] != layers:
            self._writer = layers, CompiledStep(self._make_writer(layers), "paged cache write")
        self._writer[1](self.slot_mapping, *(t for layer_idx in layers for t in pending[layer_idx]))

    def _make_writer(self, layers):
        cache = self

        def write_layers(slot_mapping, *states):
            cache.slot_mapping = slot_mapping
            for i, layer_idx in enumerate(layers):
                cache._write(states[2 * i], states[2 * i + 1], layer_idx)
            return slot_mapping.sum()            # a trace needs an output
        return write_layers

    def update(self, key_states, value_states, layer_idx):
        """Write this step's [B, heads, S, D] keys/values at `slot_mapping`; return [B, heads, T, D] contexts."""
        if self._pending is not None:
            self._pending[layer_idx] = (key_states, value_states)
            return key_states, value_states
        self._write(key_states, value_states, layer_idx)
        bsz = key_states.shape[0]
        length = self.context_slots.shape[0] // bsz
        out = []
        for pool in (self.key_cache[layer_idx], self.value_cache[layer_idx]):
            context = ops.gather(pool, self.context_slots, 0)                         # [B * T, heads, D]
            out.append(context.reshape(bsz, length, pool.shape[1], pool.shape[2]).swapaxes(1, 2))
        return out[0], out[1]

    def attend(self, query, key_states, value_states, layer_idx, mask, scale, attn_implementation=None):
        """Write this step's keys/values, then attention of `query` [B, H, S, D] over each row's context read
        from the pools through the block tables: [B, H, S, Dv]."""
        if self.block_tables is None:
            keys, values = self.update(key_states, value_states, layer_idx)
            return fused.causal_attention(query, keys, values, mask, scale, attn_implementation=attn_implementation)
        self._write(key_states, value_states, layer_idx)
        # the pools go in flat: in a compiled step, reshaping a pool Parameter copies the whole pool every call
        return fused.paged_attention(query, self.key_cache[layer_idx], self.value_cache[layer_idx], self.block_tables,
                                     mask, scale, attn_implementation=attn_implementation,
                                     block_size=self.allocator.block_size)

    def get_seq_length(self, layer_idx=0):
        # the model reads this only for default position ids and masks; the engine passes both explicitly
        return 0

    def __len__(self):
        return len(self.key_cache)
