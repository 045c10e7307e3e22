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
