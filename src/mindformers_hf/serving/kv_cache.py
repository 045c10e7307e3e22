"""A paged KV cache: every layer's keys and values live in one pool of fixed-size blocks shared by all
sequences; each sequence owns a block table (the blocks holding its positions, in order).

`PagedCache` is what the model receives as `past_key_values` for one forward. Before the forward the engine
sets, on the host, where this step's new tokens go (`slot_mapping`, one pool slot per token) and which slots
each row reads (`context_slots`, the row's block table expanded to slots, padded with the scratch slot 0).
`update()` scatters the new keys/values into the pool and returns the rows' contexts gathered back into the
[B, heads, T, D] layout the model's attention reads, so the model code is unchanged; the step's attention
mask (built by the engine) hides the padded slots. This is the gather-based reference: a fused
PagedAttention reading the pool through the block tables directly is the Ascend path (not written yet).

Block 0 is never handed out: padded rows and padded context entries point at it.
"""
import mindspore as ms
from mindspore import ops


class OutOfBlocks(RuntimeError):
    pass


class BlockAllocator:
    def __init__(self, num_blocks, block_size):
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is reserved), got {num_blocks}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free = list(range(num_blocks - 1, 0, -1))  # pop() hands out low block numbers first

    @property
    def num_free(self):
        return len(self._free)

    @property
    def num_usable(self):
        return self.num_blocks - 1

    def allocate(self, count):
        if count > len(self._free):
            raise OutOfBlocks(f"{count} KV blocks needed, {len(self._free)} free")
        return [self._free.pop() for _ in range(count)]

    def free(self, blocks):
        self._free.extend(reversed(blocks))

    def blocks_for(self, num_tokens):
        return -(-num_tokens // self.block_size)


class PagedCache:
    """The per-layer pools ([num_blocks * block_size, heads, D] Parameters, allocated from the first keys and
    values written, so layers caching other shapes -- latent attention -- work too) and this step's slots."""

    is_static = True

    def __init__(self, allocator):
        self.allocator = allocator
        self.num_slots = allocator.num_blocks * allocator.block_size
        self.key_cache, self.value_cache = [], []
        self.slot_mapping = None    # [N] int32: pool slot of each new token, row-major over [B, S]
        self.context_slots = None   # [B * T] int32: the slots each row attends to, in position order
        self._uid = PagedCache._count = getattr(PagedCache, "_count", 0) + 1

    def set_step(self, slot_mapping, context_slots):
        """This step's [N] write slots and [B * T] read slots (T comes from the shapes, so a compiled step's
        trace holds for every call of the same shapes)."""
        self.slot_mapping, self.context_slots = slot_mapping, context_slots

    def _allocate(self, layer_idx, key_states, value_states):
        while len(self.key_cache) <= layer_idx:
            self.key_cache.append(None)
            self.value_cache.append(None)
        for store, states, kind in ((self.key_cache, key_states, "k"), (self.value_cache, value_states, "v")):
            shape = (self.num_slots, states.shape[1], states.shape[3])
            store[layer_idx] = ms.Parameter(ops.zeros(shape, states.dtype), name=f"paged_cache{self._uid}.{kind}"
                                            f"{layer_idx}", requires_grad=False)

    def update(self, key_states, value_states, layer_idx):
        """Write this step's [B, heads, S, D] keys/values at `slot_mapping`; return [B, heads, T, D] contexts."""
        if layer_idx >= len(self.key_cache) or self.key_cache[layer_idx] is None:
            self._allocate(layer_idx, key_states, value_states)
        bsz = key_states.shape[0]
        length = self.context_slots.shape[0] // bsz
        out = []
        for pool, states in ((self.key_cache[layer_idx], key_states), (self.value_cache[layer_idx], value_states)):
            heads, dim = states.shape[1], states.shape[3]
            rows = states.swapaxes(1, 2).reshape(-1, heads, dim)                      # [B * S, heads, D]
            ops.scatter_update(pool, self.slot_mapping, rows.astype(pool.dtype))
            context = ops.gather(pool, self.context_slots, 0)                         # [B * T, heads, D]
            out.append(context.reshape(bsz, length, heads, dim).swapaxes(1, 2))
        return out[0], out[1]

    def get_seq_length(self, layer_idx=0):
        # the model reads this only for default position ids and masks; the engine passes both explicitly
        return 0

    def __len__(self):
        return len(self.key_cache)
