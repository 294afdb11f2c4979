"""The P x M batch sampler of metric learning: P classes with M images each per batch."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PKSampler"]


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding batches of ``p`` distinct classes x ``m`` images of each class (``p * m`` indices).

    Each epoch, every class's images are shuffled and cut into chunks of ``m``; the last chunk of a class
    is completed with other images of the same class (drawn with replacement when the class has fewer
    than ``m`` images), so every image is seen at least once per epoch and at most twice. Batches draw
    ``p`` distinct classes, favouring those with the most chunks left so that all chunks are used; when
    fewer than ``p`` classes have chunks left, the batch is filled with fresh chunks of other classes.

    Under distributed training (``num_replicas`` processes), the classes are shuffled and dealt to the
    processes each epoch, balancing their chunk counts, so the processes see disjoint classes. Every
    process yields the same number of batches, ``ceil(total chunks / (p * num_replicas))``, which is
    ``len(sampler)``; a process with more chunks than that leaves a few out that epoch.

    Deterministic under ``seed``: call :meth:`set_epoch` before each epoch (PyTorch Lightning does) to
    get that epoch's batches; without it, each new iteration moves on to the next epoch.

    Resumable: :meth:`resume_at` makes the next iteration start at a given batch of a given epoch (the batches
    depend only on seed, epoch and rank, so the position is the sampler's whole state), which is how an
    interrupted run continues with the very batch it would have drawn next. With ``with_seeds=True`` each
    batch is a list of ``(index, sample_seed)`` pairs, the seed a function of (seed, epoch, rank, batch,
    position) only, so that a dataset can draw each image's random augmentation from its own seed and a
    resumed run augments exactly as an uninterrupted one would.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        p: int,
        m: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        with_seeds: bool = False,
    ) -> None:
        labels_arr = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if labels_arr.ndim != 1 or labels_arr.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels_arr.shape}")
        if not np.issubdtype(labels_arr.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels_arr.dtype}")
        if int(p) < 1 or int(m) < 1:
            raise ValueError(f"p (classes per batch) and m (images per class) must be >= 1, got p={p}, m={m}")
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        self.p, self.m = int(p), int(m)
        self.seed, self.num_replicas, self.rank = int(seed), int(num_replicas), int(rank)
        self.classes, inverse = np.unique(labels_arr, return_inverse=True)
        if len(self.classes) < self.p * self.num_replicas:
            raise ValueError(
                f"{len(self.classes)} classes cannot fill batches of p={self.p} distinct classes on "
                f"{self.num_replicas} process(es); need at least p * num_replicas = {self.p * self.num_replicas}"
            )
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(self.classes)))[:-1]
        self._members: list[np.ndarray] = np.split(order, bounds)
        self._chunks = np.array([-(-len(idx) // self.m) for idx in self._members], dtype=np.int64)
        self.epoch = 0
        self.with_seeds = bool(with_seeds)
        self._resume: tuple[int, int] | None = None  # (epoch, first batch) of the next iteration

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of ``epoch`` on the next iteration (they depend only on seed, epoch and rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch for this process."""
        return -(-int(self._chunks.sum()) // (self.p * self.num_replicas))

    def _classes_of_rank(self, epoch: int) -> np.ndarray:
        """Deal the classes to the processes, largest chunk counts first, to the least loaded process."""
        if self.num_replicas == 1:
            return np.arange(len(self.classes))
        rng = np.random.default_rng([self.seed, epoch])
        shuffled = rng.permutation(len(self.classes))
        by_size = shuffled[np.argsort(-self._chunks[shuffled], kind="stable")]
        heap = [(0, 0, r) for r in range(self.num_replicas)]  # (chunks, classes, rank)
        owner = np.empty(len(self.classes), dtype=np.int64)
        for c in by_size:
            load, count, r = heapq.heappop(heap)
            owner[c] = r
            heapq.heappush(heap, (load + int(self._chunks[c]), count + 1, r))
        mine = np.flatnonzero(owner == self.rank)
        if len(mine) < self.p:
            raise ValueError(f"process {self.rank} got {len(mine)} classes in epoch {epoch}, fewer than p={self.p}")
        return mine

    def _chunk_class(self, c: int, rng: np.random.Generator) -> list[np.ndarray]:
        idx = rng.permutation(self._members[c])
        n_chunks = int(self._chunks[c])
        short = n_chunks * self.m - len(idx)
        if short:
            # complete the last chunk with other images of the class; with replacement only if it is too small
            pool = idx[: len(idx) - (self.m - short)] if len(idx) >= self.m else idx
            idx = np.concatenate([idx, rng.choice(pool, size=short, replace=len(pool) < short)])
        return list(idx.reshape(n_chunks, self.m))

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` for this process, as lists of ``p * m`` dataset indices."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        classes = self._classes_of_rank(epoch)
        pending = [self._chunk_class(int(c), rng) for c in classes]
        left = np.array([len(chunks) for chunks in pending], dtype=np.int64)
        result: list[list[int]] = []
        n_batches = len(self)
        for b in range(n_batches):
            batches_left = n_batches - b
            # a class with at least as many chunks as batches left must be drawn now, or its images are lost
            forced = np.flatnonzero(left >= batches_left)[: self.p]
            free = np.flatnonzero((left > 0) & (left < batches_left))
            take = min(self.p - len(forced), len(free))
            chosen = forced
            if take:
                weights = left[free].astype(np.float64)
                chosen = np.concatenate([forced, rng.choice(free, size=take, replace=False, p=weights / weights.sum())])
            batch = [pending[k].pop() for k in chosen]
            left[chosen] -= 1
            if len(chosen) < self.p:  # too few classes have chunks left: fill with fresh chunks of other classes
                others = np.setdiff1d(np.arange(len(classes)), chosen)
                for k in rng.choice(others, size=self.p - len(chosen), replace=False):
                    members = self._members[int(classes[k])]
                    batch.append(rng.choice(members, size=self.m, replace=len(members) < self.m))
            order = rng.permutation(self.p)
            result.append([int(i) for k in order for i in batch[k]])
        return result

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration yield the batches of ``epoch`` from batch ``batches_done`` (0-based) on.

        A later :meth:`set_epoch` to the same epoch keeps that starting batch; the iteration after it starts
        at the first batch again.
        """
        if int(epoch) < 0 or not 0 <= int(batches_done) <= len(self):
            raise ValueError(f"cannot resume at epoch {epoch}, batch {batches_done}: the epoch has {len(self)} batches")
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(batches_done))

    def __iter__(self) -> Iterator[list[int]] | Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        start = 0
        if self._resume is not None:
            if self._resume[0] == epoch:
                start = self._resume[1]
            self._resume = None
        self.epoch += 1
        for b, batch in enumerate(self.batches(epoch)[start:], start=start):
            if self.with_seeds:
                rng = np.random.SeedSequence([self.seed, epoch, self.rank, b]).generate_state(len(batch), np.uint64)
                yield [(i, int(s >> np.uint64(1))) for i, s in zip(batch, rng, strict=True)]
            else:
                yield batch
