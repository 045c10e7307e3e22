"""Batches for the Trainer from HF `datasets`, lists of dicts, any indexable, or an iterable.

The shuffled order of epoch `e` is a permutation drawn from numpy's generator seeded with (seed, e): it
depends on nothing else, so a resumed run recomputes it and skips the batches already trained on.
(It is not torch's RandomSampler order: the same seed gives a different order than transformers.)
"""
import numpy as np


def has_length(dataset):
    try:
        return len(dataset) is not None
    except (TypeError, NotImplementedError, AttributeError):
        return False


class DataLoader:
    def __init__(self, dataset, batch_size, collate_fn, shuffle=False, seed=0, drop_last=False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset, self.batch_size, self.collate_fn = dataset, int(batch_size), collate_fn
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        self.sized = has_length(dataset) and hasattr(dataset, "__getitem__")
        if not self.sized and not hasattr(dataset, "__iter__"):
            raise TypeError(f"A dataset must be indexable with a length, or iterable; got {type(dataset).__name__}")

    def __len__(self):
        if not self.sized:
            raise TypeError("an iterable dataset has no length")
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        if not self.sized and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _order(self):
        n = len(self.dataset)
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
        for b in range(skip_batches, len(self)):
            yield self.collate_fn(self._fetch(order[b * self.batch_size:(b + 1) * self.batch_size]))

    def _iter_iterable(self, skip_batches):
        chunk, seen = [], 0
        for example in self.dataset:
            chunk.append(example)
            if len(chunk) == self.batch_size:
                if seen >= skip_batches:
                    yield self.collate_fn(chunk)
                seen, chunk = seen + 1, []
        if chunk and not self.drop_last and seen >= skip_batches:
            yield self.collate_fn(chunk)
