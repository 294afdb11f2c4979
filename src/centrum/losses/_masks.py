"""Shared pieces of the pair-based losses: label masks, the (anchor, positive) pairs, and :class:`Negatives`,
the seam through which :class:`~centrum.losses.SymmetricalSynthesis` hands its candidates to a loss.

Conventions of the ``*_from_negatives`` kernels: ``x`` is the prepared N x D float32 batch; ``mat`` the N x N
anchor-vs-batch matrix in the loss's metric (a distance for contrastive, triplet and lifted structure, a
similarity for N-pair and angular); ``negatives`` lists, per anchor row, the negative values the loss may use.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "Negatives",
    "all_negatives",
    "block_pairs",
    "class_index",
    "dense_class_ids",
    "first_pair_rows",
    "first_pairs",
    "ordered_positive_pairs",
    "same_class_mask",
]


class Negatives(NamedTuple):
    """Per-anchor negatives fed to a pair-based loss.

    ``values`` (N x S): anchor-to-negative distance or similarity, in the loss's metric; ``mask`` (N x S):
    which slots hold a negative; ``index`` (N x S): the column of each negative among the candidates;
    ``inner`` (N x K, optional): inner products of every batch sample with every candidate (``None``: the
    candidates are the batch itself, so ``x @ x.T``), which is all the angular loss needs of a negative point;
    ``is_synthetic`` (N x S, optional): whether the chosen negative is a synthetic point.
    """

    values: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor
    inner: torch.Tensor | None = None
    is_synthetic: torch.Tensor | None = None


def _zero_loss(x: torch.Tensor) -> torch.Tensor:
    """A zero that stays connected to the graph, so ``backward()`` works on batches with nothing to learn."""
    return x.sum() * 0.0


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds (0 when it holds nowhere), in static shapes. Entries outside the
    mask are replaced, not multiplied by 0, so an inf there cannot turn the sum into NaN."""
    count = mask.sum()
    return torch.where(mask, values, 0.0).sum() / count.clamp_min(1)


def _log1p_sum_exp(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log(1 + sum_j exp(z_j))`` over the masked entries of the last dimension, stable and NaN-free."""
    z = z.masked_fill(~mask, float("-inf"))
    zero = z.new_zeros((*z.shape[:-1], 1))
    return torch.logsumexp(torch.cat([zero, z], dim=-1), dim=-1)


def class_index(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(classes, inverse, counts)``: sorted distinct labels, each sample's class position, class sizes.
    Its output shapes depend on the data (a device sync): see :func:`dense_class_ids` for the static form."""
    return torch.unique(labels, return_inverse=True, return_counts=True)


def _sorted_runs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order, starts)``: the stable sort of ``labels`` and, in sorted order, where a new label begins."""
    sorted_labels, order = torch.sort(labels, stable=True)
    starts = torch.ones_like(labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    return order, starts


def dense_class_ids(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inverse, counts)`` with static shapes: each sample's class position among the sorted distinct labels
    (as :func:`class_index`'s ``inverse``), and the N-long vector of class sizes, zero past the last class.

    No output shape depends on the labels, so the host never waits on the device and ``torch.compile`` traces
    it whole; the price is N class slots instead of C.
    """
    order, starts = _sorted_runs(labels)
    inverse = torch.empty_like(labels).scatter_(0, order, torch.cumsum(starts.long(), 0) - 1)
    counts = torch.zeros_like(labels).index_add_(0, inverse, torch.ones_like(labels))
    return inverse, counts


def first_pair_rows(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sohn's N pairs in static shapes: ``(is_anchor, partner, is_positive)``. ``is_anchor[i]``: sample i is the
    first of its class in batch order and the class has a second; ``partner[i]``: that second sample (for
    anchors; the sample itself elsewhere); ``is_positive[j]``: sample j is some anchor's partner. The same pairs as
    :func:`first_pairs`, without a data-dependent shape."""
    n = labels.shape[0]
    order, starts = _sorted_runs(labels)
    second = torch.zeros_like(starts)
    second[:-1] = starts[:-1] & ~starts[1:]  # a run's first element with a second one after it
    next_in_order = torch.cat([order[1:], order[-1:]])
    is_anchor = torch.zeros_like(starts).scatter_(0, order, second)
    partner = torch.arange(n, device=labels.device).scatter(0, order, torch.where(second, next_in_order, order))
    second_sorted = torch.zeros_like(starts)
    second_sorted[1:] = second[:-1]
    is_positive = torch.zeros_like(starts).scatter_(0, order, second_sorted)
    return is_anchor, partner, is_positive


def block_pairs(num_classes: int, samples_per_class: int, device: torch.device | str | None = None):
    """:func:`ordered_positive_pairs` of a batch in class-major blocks (P classes x M samples, rows ``c M .. c M +
    M - 1`` of class c, the P x M sampler's order), from P and M alone: ``(source, axis)``, in the same order."""
    P, M = int(num_classes), int(samples_per_class)
    k = torch.arange(M, device=device).view(M, 1)
    d = torch.arange(M - 1, device=device).view(1, M - 1)
    within = d + (d >= k).long()  # the other M - 1 positions of the block, ascending
    start = (torch.arange(P, device=device) * M).view(P, 1, 1)
    source = (start + k.unsqueeze(0)).expand(P, M, M - 1).reshape(-1)
    axis = (start + within.unsqueeze(0)).reshape(-1)
    return source, axis


def same_class_mask(labels: torch.Tensor) -> torch.Tensor:
    """N x N boolean: ``labels[i] == labels[j]`` and ``i != j`` (the ordered positive pairs)."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    return same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)


def ordered_positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(i, j)`` of every ordered pair of distinct samples with the same label."""
    i, j = same_class_mask(labels).nonzero(as_tuple=True)
    return i, j


def first_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One (anchor, positive) pair per class with at least two samples: its first and second sample in
    batch order (Sohn's N pairs; the pair pytorch-metric-learning's ``NPairsLoss`` picks too)."""
    n = labels.shape[0]
    _, inverse = torch.unique(labels, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    sorted_cls = inverse[order]
    is_first = torch.ones(n, dtype=torch.bool, device=labels.device)
    is_first[1:] = sorted_cls[1:] != sorted_cls[:-1]
    has_second = torch.zeros(n, dtype=torch.bool, device=labels.device)
    has_second[:-1] = is_first[:-1] & (sorted_cls[1:] == sorted_cls[:-1])
    first = has_second.nonzero(as_tuple=True)[0]
    return order[first], order[first + 1]


def all_negatives(mat: torch.Tensor, labels: torch.Tensor, columns: torch.Tensor | None = None) -> Negatives:
    """The negatives of a loss without Symm: every batch sample of another class (or only ``columns``)."""
    bank_labels = labels if columns is None else labels[columns]
    values = mat if columns is None else mat[:, columns]
    mask = labels.unsqueeze(1) != bank_labels.unsqueeze(0)
    index = torch.arange(values.shape[1], device=mat.device) if columns is None else columns
    return Negatives(values, mask, index.unsqueeze(0).expand_as(values))
