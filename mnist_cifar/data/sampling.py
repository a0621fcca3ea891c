"""Which images each process reads, in which order: one sampler for one process and for DDP alike.

Lightning would otherwise swap in a `DistributedSampler`, which pads the evaluation splits with repeated
images so every rank gets the same count (test accuracy then counts some images twice) and whose shuffle
cannot resume mid-epoch. Subclassing `DistributedSampler` tells Lightning to leave this one alone.

- Training: the epoch's order is `randperm(n)` from a generator seeded with `seed + epoch`, so it depends
  on nothing but the seed and the epoch (not on the global RNG, not on how the run was interrupted). It is
  padded, as DistributedSampler does, so every rank takes the same number of optimizer steps; rank `r`
  takes every `world`-th index from `r`. `skip_images` drops the first images of the epoch's order, the ones an
  interrupted epoch already trained on (counted over all ranks, so a resume with another batch size or number of
  processes neither repeats nor skips an image; the rest is padded again for the new number of ranks).
- Evaluation and predict: contiguous shards without padding, in input order. Rank `r` reads
  `[r * n // world, (r + 1) * n // world)`: every image exactly once, and the ranks' outputs joined in rank
  order are in input order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler


class ShardSampler(DistributedSampler):
    def __init__(self, dataset: Dataset, *, shuffle: bool, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 batch_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.size = len(dataset)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.skip_images = 0
        if not shuffle:
            start, end = self._shard_bounds()
            self.num_samples = end - start

    def _shard_bounds(self) -> tuple[int, int]:
        return self.rank * self.size // self.num_replicas, (self.rank + 1) * self.size // self.num_replicas

    def epoch_order(self) -> list[int]:
        """This rank's indices for the current epoch, after the `skip_images` an interrupted epoch already did."""
        if not self.shuffle:
            return list(range(*self._shard_bounds()))
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        padded = order + order[: self.total_size - self.size]  # pad, so every rank takes the same number of steps
        rest = padded[self.skip_images :]
        rest += order[: -len(rest) % self.num_replicas]  # a resume on another number of ranks pads again
        return rest[self.rank :: self.num_replicas]

    def remaining(self) -> int:
        """How many indices this rank takes in the current epoch after `skip_images` (what `epoch_order` returns)."""
        if not self.shuffle:
            return self.num_samples
        return -(-max(self.total_size - self.skip_images, 0) // self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order()
        self.skip_images = 0  # only the epoch that was interrupted is shortened
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples


class DeviceBatches:
    """Training, validation or test batches sliced from a split that lives on the training device (uint8).

    The airbench way for data sets that fit in device memory: the split is copied to the device once, and each
    batch is one indexing op there, with no DataLoader, no per-batch host-to-device copy and no worker. The
    order is the `ShardSampler`'s, so the batches, the shuffling, DDP sharding and mid-epoch resume are exactly
    those of the DataLoader path (the same run gives the same weights either way). Lightning accepts any
    iterable with a length, and calls `set_epoch` on `.sampler`.
    """

    batch_sampler = None  # Lightning looks for one beside `sampler`

    def __init__(self, images: Tensor, labels: Tensor, sampler: ShardSampler, batch_size: int) -> None:
        self.images, self.labels, self.sampler, self.batch_size = images, labels, sampler, batch_size

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long, device=self.images.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.images[index], self.labels[index]
