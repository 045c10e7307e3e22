"""`batch_size=auto` / `auto:N` for the lm_eval backend: the largest batch whose forward fits in RAM.

HFLM tries batch sizes from `max_batch_size` down, halving on each CUDA out-of-memory error. On a CPU running
out of memory is no exception to catch: the kernel's OOM killer ends the process (or the machine swaps first),
so trying is not safe. The same search (from max_batch_size, halving, at least 1) here checks each size against
an estimate of the forward's peak memory (`row_bytes`, per row of the longest width at hand) and half of the
memory the system reports available at that moment (MemAvailable in /proc/meminfo): the other half is headroom
for the estimate's error and for everything else on the machine.
"""
import os

# Share of the available memory one batch may use (module docstring).
MEMORY_FRACTION = 0.5


def available_memory():
    """Bytes the system can give without swapping (Linux MemAvailable); elsewhere the free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def row_bytes(config, width, keep, cache=False, dtype_bytes=4):
    """Estimated peak bytes one row adds to an eager forward of `width` tokens that keeps the logits of `keep`
    positions: one decoder layer's activations (the layers run one after another), the attention scores and
    probabilities in float32, the additive masks (built on the host, copied to a tensor: twice; one per layer
    type at most two), the logits with their float32 copy and log-softmax, and with `cache` the keys and values
    of every layer (generation)."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    layer = width * (6 * hidden + 3 * intermediate) * dtype_bytes
    attention = 2 * heads * width * width * 4
    masks = 2 * 2 * width * width * 4
    logits = keep * config.vocab_size * (dtype_bytes + 8)
    total = layer + attention + masks + logits
    if cache:
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        total += 2 * config.num_hidden_layers * kv_heads * head_dim * width * dtype_bytes
    return total


def largest_batch(per_row, max_batch_size, budget=None):
    """HFLM's search, from max_batch_size halving down to 1, against `budget` bytes (default: MEMORY_FRACTION
    of the available memory)."""
    budget = MEMORY_FRACTION * available_memory() if budget is None else budget
    size = max(1, int(max_batch_size))
    while size > 1 and size * per_row > budget:
        size //= 2
    return size


class BatchScheduler:
    """HFLM's `_batch_scheduler`: `auto` finds one size per call from its first (longest) batch; `auto:N`
    finds it again at each N-th of the requests, keeping max_batch_size once it is reached."""

    def __init__(self, schedule, max_batch_size, estimate):
        """estimate(item) -> bytes per row of a batch starting at `item` (the longest of its batch)."""
        self.schedule, self.max_batch_size, self.estimate = schedule, max_batch_size, estimate
        self.sizes = {}

    def __call__(self, position, items):
        """The batch size at `position` of the sorted `items` (lm_eval Collator's batch_fn signature)."""
        step = max(1, int(len(items) / self.schedule))
        slot = position // step
        if slot not in self.sizes:
            if slot - 1 in self.sizes and self.sizes[slot - 1] == self.max_batch_size:
                self.sizes[slot] = self.max_batch_size
            else:
                self.sizes[slot] = largest_batch(self.estimate(items[position]), self.max_batch_size)
        return self.sizes[slot]
