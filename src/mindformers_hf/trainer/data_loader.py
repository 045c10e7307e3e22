"""Batches for the Trainer from HF `datasets`, lists of dicts, any indexable, or an iterable.

The shuffled order of epoch `e` is a permutation drawn from numpy's generator seeded with (seed, e): it
depends on nothing else, so a resumed run recomputes it and skips the batches already trained on.
(It is not torch's RandomSampler order: the same seed gives a different order than transformers.)

`train_sampling_strategy="group_by_length"` (transformers' LengthGroupedSampler): `group_lengths` given,
the epoch's permutation is cut into mega-batches sorted by length (`length_grouped_indices`, transformers'
get_length_grouped_indices on our permutation instead of torch.randperm's).

Data parallel (`num_shards` > 1): as accelerate's sharded batch sampler, step b of rank r is the r-th slice
of the b-th global batch of `batch_size * num_shards` examples, so the ranks together see exactly what one
process with the global batch would; a short last global batch is filled from the start of the order
(accelerate's `even_batches`) so that every rank takes part in every step's gradient all-reduce.
"""
import numpy as np


def has_length(dataset):
    try:
        return len(dataset) is not None
    except (TypeError, NotImplementedError, AttributeError):
        return False


def length_grouped_indices(lengths, batch_size, permutation):
    """transformers' get_length_grouped_indices, the random permutation given: mega-batches of
    `mega_batch_mult * batch_size` consecutive indices, each sorted by decreasing length, and the longest
    element of all moved to the very first place (so an out-of-memory shows at the first step)."""
    mega_batch_mult = min(len(lengths) // (batch_size * 4), 50) or 1
    size = mega_batch_mult * batch_size
    permutation = [int(i) for i in permutation]
    megabatches = [sorted(permutation[i:i + size], key=lambda i: lengths[i], reverse=True)  # (stable, as HF's)
                   for i in range(0, len(lengths), size)]
    max_idx = int(np.argmax([lengths[m[0]] for m in megabatches]))  # the first maximum, as torch.argmax
    megabatches[0][0], megabatches[max_idx][0] = megabatches[max_idx][0], megabatches[0][0]
    return [i for megabatch in megabatches for i in megabatch]


class DataLoader:
    def __init__(self, dataset, batch_size, collate_fn, shuffle=False, seed=0, drop_last=False, num_shards=1,
                 shard_index=0, group_lengths=None, group_batch_size=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} is not in [0, {num_shards})")
        self.num_shards, self.shard_index = int(num_shards), int(shard_index)
        self.dataset, self.batch_size, self.collate_fn = dataset, int(batch_size), collate_fn
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        self.group_lengths, self.group_batch_size = group_lengths, group_batch_size or self.batch_size
        self.sized = has_length(dataset) and hasattr(dataset, "__getitem__")
        if not self.sized and not hasattr(dataset, "__iter__"):
            raise TypeError(f"A dataset must be indexable with a length, or iterable; got {type(dataset).__name__}")

    def __len__(self):
        if not self.sized:
            raise TypeError("an iterable dataset has no length")
        n, per_step = len(self.dataset), self.batch_size * self.num_shards
        return n // per_step if self.drop_last else -(-n // per_step)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        if not self.sized and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _order(self):
        n = len(self.dataset)
        if self.group_lengths is not None:  # (grouped orders are random, as transformers' sampler, even for eval)
            permutation = np.random.default_rng([self.seed, self.epoch]).permutation(n)
            return np.asarray(length_grouped_indices(self.group_lengths, self.group_batch_size, permutation))
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(n)
        return np.arange(n)

    def _fetch(self, indices):
        indices = [int(i) for i in indices]
        getitems = getattr(self.dataset, "__getitems__", None)  # datasets.Dataset reads a batch in one call
        if getitems is not None:
            return getitems(indices)
        return [self.dataset[i] for i in indices]

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, skip_batches):
        """Batches of this epoch, after the first `skip_batches` (which are not read)."""
        if not self.sized:
            yield from self._iter_iterable(skip_batches)
            return
        order = self._order()
        per_step = self.batch_size * self.num_shards
        if self.num_shards > 1 and len(order) % per_step and len(self) * per_step > len(order):
            order = np.resize(order, len(self) * per_step)  # even_batches: wrap around to the start
        for b in range(skip_batches, len(self)):
            start = b * per_step + self.shard_index * self.batch_size
            yield self.collate_fn(self._fetch(order[start:start + self.batch_size]))

    def _iter_iterable(self, skip_batches):
        if self.num_shards > 1:
            raise NotImplementedError("data parallel training on an iterable dataset (no length) is not supported: "
                                      "pass an indexable dataset, or shard the stream yourself per rank")
        chunk, seen = [], 0
        for example in self.dataset:
            chunk.append(example)
            if len(chunk) == self.batch_size:
                if seen >= skip_batches:
                    yield self.collate_fn(chunk)
                seen, chunk = seen + 1, []
        if chunk and not self.drop_last and seen >= skip_batches:
            yield self.collate_fn(chunk)
