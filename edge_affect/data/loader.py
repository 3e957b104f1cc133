"""Batches from a ``PackedCache`` (torch): sorted memmap gathers, DDP sharding, pinned async copies.

No worker processes are needed: a batch is one sorted fancy-index read of the uint8 memmap (mostly
sequential pages), copied into a pinned buffer and sent to the GPU with ``non_blocking=True``; labels
live on the target device already. Augmentation happens afterwards on the device (``GpuAugment``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
import torch

from edge_affect.data.cache import PackedCache

log = logging.getLogger(__name__)


class PackedLoader:
    """Iterable of batch dicts ``{"image", "va", "expr", "au", "index"}`` over one rank's shard.

    Each epoch every rank draws the same permutation (``seed``, epoch), truncates it to a multiple of
    ``world_size`` and takes every ``world_size``-th element from ``rank``: disjoint shards of equal
    length. ``image`` is uint8 N×S×S×3 on ``device``; ``va`` float32 N×2 (-5 missing); ``expr`` int64 N
    (-1 missing); ``au`` float32 N×12 (-1 rows missing); ``index`` int64 N (row in the cache); and
    ``expr_soft`` float32 N×8 when the cache holds soft expression targets.
    """

    def __init__(
        self,
        cache: PackedCache,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}, expected >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: expected 0 <= rank < world_size")
        n = len(cache)
        if n < world_size:
            raise ValueError(f"cache {cache.dir} holds {n} images, expected at least world_size={world_size}")
        self.cache = cache
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.epoch = 0
        self._epoch_set = False
        self.per_rank = n // world_size
        if drop_last and self.per_rank < batch_size:
            raise ValueError(
                f"{self.per_rank} images per rank < batch_size {batch_size} with drop_last: no batch to yield"
            )
        self._cuda = self.device.type == "cuda"
        self.va = torch.from_numpy(np.ascontiguousarray(cache.va, dtype=np.float32)).to(self.device)
        self.expr = torch.from_numpy(np.ascontiguousarray(cache.expr, dtype=np.int64)).to(self.device)
        self.au = torch.from_numpy(np.ascontiguousarray(cache.au, dtype=np.float32)).to(self.device)
        soft = cache.expr_soft
        self.expr_soft = (
            None if soft is None else torch.from_numpy(np.ascontiguousarray(soft, np.float32)).to(self.device)
        )
        self._pinned: list[torch.Tensor] = []
        self._events: list[torch.cuda.Event | None] = []
        if self._cuda:
            s = cache.size
            self._pinned = [torch.empty((batch_size, s, s, 3), dtype=torch.uint8).pin_memory() for _ in range(2)]
            self._events = [None, None]

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (same on every rank). Without a call, each pass advances by one."""
        self.epoch = int(epoch)
        self._epoch_set = True

    def shard(self, epoch: int | None = None) -> np.ndarray:
        """This rank's cache rows for ``epoch`` (default: the next pass), in yield order."""
        e = self.epoch if epoch is None else epoch
        n = len(self.cache)
        order = np.random.default_rng([self.seed, e]).permutation(n) if self.shuffle else np.arange(n)
        return order[: self.per_rank * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shard = self.shard()
        if not self._epoch_set:
            self.epoch += 1  # the next pass reshuffles unless set_epoch is called
        self._epoch_set = False
        bs = self.batch_size
        images = self.cache.images
        for b in range(len(self)):
            idx = np.sort(shard[b * bs : (b + 1) * bs])
            yield self._batch(images, idx, b)

    def _batch(self, images: np.ndarray, idx: np.ndarray, b: int) -> dict[str, torch.Tensor]:
        k = len(idx)
        if self._cuda:
            slot = b % 2
            ev = self._events[slot]
            if ev is not None:
                ev.synchronize()  # the previous copy out of this pinned buffer has finished
            buf = self._pinned[slot][:k]
            np.take(images, idx, axis=0, out=buf.numpy(), mode="clip")  # idx is valid; "raise" would buffer
            img = buf.to(self.device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            self._events[slot] = ev
            index = torch.from_numpy(idx).to(self.device, non_blocking=True)
        else:
            img = torch.from_numpy(images[idx])
            index = torch.from_numpy(idx)
        batch = {
            "image": img,
            "va": self.va[index],
            "expr": self.expr[index],
            "au": self.au[index],
            "index": index,
        }
        if self.expr_soft is not None:
            batch["expr_soft"] = self.expr_soft[index]
        return batch
