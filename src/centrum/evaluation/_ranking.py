"""Rank positions of the relevant gallery items, exactly and without sorting the gallery.

Every protocol reduces to one question per query: at which 1-based positions of the ranking (ascending
distance, ties broken by gallery order, removed items skipped) do the relevant items appear? A full
sort answers it in O(G log G) per query. Here each distance becomes a 64-bit key that orders exactly
like (distance, column); the relevant items' keys are sorted (a few per query), every gallery key is
binary-searched among them and a histogram of the results gives, after a cumulative sum, the number of
gallery items at or before each relevant item. The answer is the same as a stable argsort, ties
included, in O(G log R) per query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from centrum.distances import check_metric, l2_normalize

INT64_MAX = torch.iinfo(torch.int64).max
# elements of a query-chunk x gallery block; about 40 bytes each are alive at once (~160 MB)
CHUNK_ELEMENTS = 1 << 22


def auto_chunk_size(num_queries: int, num_gallery: int, chunk_size: int | None) -> int:
    """Number of queries per block: ``chunk_size`` if given (validated), else a bounded-memory choice."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        return int(chunk_size)
    return max(1, min(num_queries, CHUNK_ELEMENTS // max(num_gallery, 1)))


def _float_bits(distances: torch.Tensor) -> torch.Tensor:
    """int64 image of float32 distances with the same order (magnitude bits of negatives flipped)."""
    bits = (distances.float() + 0.0).view(torch.int32)  # -0.0 + 0.0 == +0.0: equal values, equal bits
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()


def order_keys(distances: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
    """int64 keys that sort like ``(distance, column index)``: a stable ascending order.

    The order-preserving integer image of each float32 distance fills the high 32 bits and its column
    the low 32 bits. ``columns`` defaults to the column positions of a 2-D ``distances``.
    """
    if columns is None:
        columns = torch.arange(distances.shape[-1], device=distances.device, dtype=torch.int64)
    return (_float_bits(distances) << 32) | columns


class LabelGroups:
    """The gallery positions of each label, to fetch the same-label candidates of a chunk of queries."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.order = torch.argsort(labels, stable=True)
        self.unique, self.counts = torch.unique_consecutive(labels[self.order], return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def members(self, query_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gallery indices of each query label's members (B x L, padded) and the mask of real entries."""
        pos = torch.searchsorted(self.unique, query_labels).clamp_max(len(self.unique) - 1)
        found = self.unique[pos] == query_labels
        n = torch.where(found, self.counts[pos], torch.zeros_like(pos))
        width = max(int(n.max()) if n.numel() else 0, 1)
        offsets = torch.arange(width, device=query_labels.device)
        present = offsets[None, :] < n[:, None]
        flat = (self.starts[pos][:, None] + offsets[None, :]).clamp_max(len(self.order) - 1)
        return self.order[flat], present


def relevant_ranks(
    distances: torch.Tensor, candidates: torch.Tensor, relevant: torch.Tensor, removed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks of each query's relevant items among the items that are not removed.

    ``distances``: B x G. ``candidates``: B x L gallery indices; ``relevant`` and ``removed`` (B x L
    bool) say which candidates are relevant and which are dropped from the ranking (every
    non-candidate item stays, as a negative). The ranking is ascending distance, ties broken by
    column. Returns ``ranks`` (B x R int64, ascending; column i is the rank of the (i+1)-th relevant
    item, meaningless for i >= num_relevant) and ``num_relevant``.

    Only the items no farther than a query's last relevant item can precede one: those are selected
    by one comparison pass and only they are keyed and binary-searched.
    """
    B = distances.shape[0]
    cand_dist = distances.gather(1, candidates)
    cand_keys = order_keys(cand_dist, candidates)
    num_relevant = relevant.sum(1)
    width = max(int(num_relevant.max()) if B else 0, 1)
    rel_keys = torch.where(relevant, cand_keys, INT64_MAX).sort(dim=1).values[:, :width].contiguous()
    farthest = torch.where(relevant, cand_dist.float(), float("-inf")).max(1).values
    rows, cols = (distances <= farthest[:, None]).nonzero(as_tuple=True)
    keys = order_keys(distances[rows, cols], cols)
    bucket = torch.empty_like(keys)  # number of relevant keys of the row strictly below each key
    block = max(1, (1 << 22) // width)
    for s in range(0, keys.shape[0], block):
        part = slice(s, s + block)
        bucket[part] = torch.searchsorted(rel_keys[rows[part]], keys[part, None]).squeeze(1)
    flat = rows * (width + 1) + bucket
    hist = torch.bincount(flat, minlength=B * (width + 1)).view(B, width + 1)
    ranks = hist.cumsum(1)[:, :width]  # items with key <= the i-th relevant key, itself included
    if bool(removed.any()):
        removed_keys = torch.where(removed, cand_keys, INT64_MAX).sort(dim=1).values.contiguous()
        ranks = ranks - torch.searchsorted(removed_keys, rel_keys)
    return ranks, num_relevant


@dataclass
class QueryScores:
    """Per-query results of one chunk (float64): AP, INP, first-hit rank and, when asked, the @R scores."""

    first_rank: torch.Tensor
    num_relevant: torch.Tensor
    average_precision: torch.Tensor
    inverse_negative_penalty: torch.Tensor
    map_at_r: torch.Tensor | None = None
    r_precision: torch.Tensor | None = None


def score_queries(ranks: torch.Tensor, num_relevant: torch.Tensor, at_r: bool = False) -> QueryScores:
    """AP, INP (num_relevant / rank of the last hit), first-hit rank and optionally MAP@R and R-Precision.

    Queries without a relevant item get first rank = int64 max and zeros elsewhere.
    """
    width = ranks.shape[1]
    position = torch.arange(1, width + 1, device=ranks.device, dtype=torch.float64)
    is_hit = position[None, :] <= num_relevant[:, None]
    ranks_f = ranks.double().clamp_min(1.0)
    precision_at_hit = torch.where(is_hit, position[None, :] / ranks_f, 0.0)
    n = num_relevant.double()
    valid = num_relevant > 0
    safe_n = n.clamp_min(1.0)
    ap = torch.where(valid, precision_at_hit.sum(1) / safe_n, 0.0)
    last = ranks_f.gather(1, (num_relevant - 1).clamp_min(0)[:, None]).squeeze(1)
    inp = torch.where(valid, n / last, 0.0)
    first = torch.where(valid, ranks[:, 0], torch.full_like(ranks[:, 0], INT64_MAX))
    scores = QueryScores(first, num_relevant, ap, inp)
    if at_r:
        within_r = is_hit & (ranks_f <= n[:, None])
        scores.map_at_r = torch.where(valid, torch.where(within_r, precision_at_hit, 0.0).sum(1) / safe_n, 0.0)
        scores.r_precision = torch.where(valid, within_r.sum(1).double() / safe_n, 0.0)
    return scores


class PreparedGallery:
    """Gallery embeddings prepared once for a metric, so that each query chunk costs one matrix product."""

    def __init__(self, gallery: torch.Tensor, metric: str) -> None:
        self.metric = check_metric(metric)
        self.vectors = l2_normalize(gallery) if metric == "cosine" else gallery.float()
        self.sq_norms = (self.vectors * self.vectors).sum(1) if "euclidean" in metric else None

    def prepare_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries in the same space as the gallery (L2-normalised for the cosine metric)."""
        return l2_normalize(queries) if self.metric == "cosine" else queries.float()

    def distances(self, queries: torch.Tensor) -> torch.Tensor:
        """Distances (smaller = closer) of prepared queries to every gallery row, as in centrum.distances.

        Computed in place on the one B x G product, so that a chunk costs one matrix and no temporaries.
        """
        if self.sq_norms is None:
            dots = queries @ self.vectors.T
            return dots.neg_().add_(1.0) if self.metric == "cosine" else dots.neg_()
        # (|q|^2 + |g|^2) - 2 q.g in this order, as centrum.distances and the widely copied re-id code
        d2 = (queries * queries).sum(1, keepdim=True) + self.sq_norms[None, :]
        d2.addmm_(queries, self.vectors.T, alpha=-2.0).clamp_min_(0.0)
        return d2 if self.metric == "squared_euclidean" else d2.clamp_min_(1e-12).sqrt_()

    def rowwise_distances(self, queries: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Distance of each prepared query to the matching row of ``others`` (raw, prepared here)."""
        others = l2_normalize(others) if self.metric == "cosine" else others.float()
        dots = (queries * others).sum(1)
        if self.metric == "cosine":
            return 1.0 - dots
        if self.metric == "dot":
            return -dots
        d2 = ((queries * queries).sum(1) + (others * others).sum(1) - 2.0 * dots).clamp_min(0.0)
        return d2 if self.metric == "squared_euclidean" else d2.clamp_min(1e-12).sqrt()
