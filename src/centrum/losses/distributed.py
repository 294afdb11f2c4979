"""A loss computed on the embeddings of every rank of a distributed job, not only the local batch.

Batch losses mine their negatives (and CTL builds its centroids) inside the batch, so with data-parallel training
each rank sees only its share of the classes. :class:`GatherAcrossRanks` gathers the embeddings and labels of all
ranks, computes the wrapped loss on the concatenated batch, and lets gradients flow to the local part only (the
other ranks' embeddings are constants here; each rank back-propagates its own part), as pytorch-metric-learning's
``DistributedLossWrapper`` does. The wrapper calls only the wrapped loss's public ``loss(embeddings, labels)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GatherAcrossRanks", "gather_across_ranks"]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_across_ranks(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """The embeddings and labels of all ranks, concatenated in rank order, and the slice that holds this rank's.

    Ranks may hold different batch sizes (padded for the collective, then trimmed). Only this rank's rows carry
    gradient: they are the local tensor itself, the others are received copies. Without an initialised process
    group (or with one process) the inputs are returned as they are.
    """
    world = _world_size()
    if world == 1:
        return embeddings, labels, slice(0, embeddings.shape[0])
    rank = dist.get_rank()
    n_local = torch.tensor([embeddings.shape[0]], device=embeddings.device, dtype=torch.long)
    sizes = [torch.zeros_like(n_local) for _ in range(world)]
    dist.all_gather(sizes, n_local)
    counts = [int(s) for s in sizes]
    width = max(counts)

    def padded(x: torch.Tensor) -> torch.Tensor:
        pad = x.new_zeros((width - x.shape[0], *x.shape[1:]))
        return torch.cat([x.detach(), pad]) if pad.shape[0] else x.detach().contiguous()

    emb_parts = [torch.empty_like(padded(embeddings)) for _ in range(world)]
    lab_parts = [torch.empty_like(padded(labels)) for _ in range(world)]
    dist.all_gather(emb_parts, padded(embeddings))
    dist.all_gather(lab_parts, padded(labels))
    emb_parts = [part[:n] for part, n in zip(emb_parts, counts, strict=True)]
    lab_parts = [part[:n] for part, n in zip(lab_parts, counts, strict=True)]
    emb_parts[rank] = embeddings  # the local rows keep their autograd history
    lab_parts[rank] = labels
    start = sum(counts[:rank])
    return torch.cat(emb_parts), torch.cat(lab_parts), slice(start, start + counts[rank])


class GatherAcrossRanks(nn.Module):
    """Compute ``loss`` on the embeddings and labels of all ranks (see the module docstring).

    The value returned is the wrapped loss of the concatenated batch, identical on every rank, and the gradient
    that reaches this rank's embeddings is that of the concatenated-batch loss with respect to them.

    ``scale_for_ddp``: DistributedDataParallel *averages* parameter gradients over ranks, while the gradient of
    the concatenated-batch loss is the *sum* of the ranks' contributions. With ``True`` (default) the gradient
    (not the reported value) is multiplied by the world size, so that after DDP's averaging every parameter
    receives exactly the gradient of one process training on the concatenated batch.

    ``last_stats`` forwards the wrapped loss's per-call statistics.
    """

    def __init__(self, loss: nn.Module, scale_for_ddp: bool = True) -> None:
        super().__init__()
        self.loss = loss
        self.scale_for_ddp = bool(scale_for_ddp)

    @property
    def last_stats(self) -> dict[str, Any]:
        """The wrapped loss's statistics of its last call (empty if it reports none)."""
        return dict(getattr(self.loss, "last_stats", {}) or {})

    @property
    def last_stats_tensors(self) -> dict[str, Any]:
        """The wrapped loss's statistics as recorded, without waiting on the device (see
        :attr:`~centrum.losses.ReportsStats.last_stats_tensors`)."""
        return dict(getattr(self.loss, "last_stats_tensors", {}) or {})

    @property
    def last_backward_stats(self) -> dict[str, Any]:
        """The wrapped loss's statistics of its last backward pass (empty if it reports none)."""
        return dict(getattr(self.loss, "last_backward_stats", {}) or {})

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, **options: Any) -> torch.Tensor:
        """The wrapped loss of all ranks' batches together; a scalar tensor. ``options`` go to the wrapped loss
        as they are (``samples_per_class`` holds for the concatenation too: the ranks' P x M batches are
        class-major blocks of disjoint classes)."""
        world = _world_size()
        all_embeddings, all_labels, _ = gather_across_ranks(embeddings, labels)
        value = self.loss(all_embeddings, all_labels, **options)
        if world > 1 and self.scale_for_ddp:
            # same value, gradient times the world size: DDP's mean over ranks then gives the full-batch sum
            value = value + (world - 1) * (value - value.detach())
        return value

    def extra_repr(self) -> str:
        return f"scale_for_ddp={self.scale_for_ddp}"
