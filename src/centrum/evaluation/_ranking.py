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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from centrum.distances import Metric, check_metric

INT64_MAX = torch.iinfo(torch.int64).max
# bits left for the row and the column in a 63-bit (row, distance, column) key of relevant_ranks
ROW_COLUMN_BITS = 31
# elements of a query-chunk x gallery block (64 MB of float32 distances): large enough that the matrix
# product runs near full speed, small enough that memory does not grow with the number of queries
CHUNK_ELEMENTS = 1 << 24


@contextmanager
def serial_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the block's ranking steps on one CPU thread (the matrix product keeps all of them).

    The ranking works on small and medium tensors (sorts, searches, gathers of ~1e5 items), for which
    torch's intra-op threading costs more than it gains: a 1-D sort of 140k keys took 190 ms on two
    threads and 8 ms on one (2-core machine). The previous thread count is restored on exit.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def auto_chunk_size(num_queries: int, num_gallery: int, chunk_size: int | None, elements: int = CHUNK_ELEMENTS) -> int:
    """Number of queries per block: ``chunk_size`` if given (validated), else about ``elements`` pairs."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        return int(chunk_size)
    return max(1, min(num_queries, elements // max(num_gallery, 1)))


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

    Only the items no farther than a query's last relevant item can precede one: one comparison pass
    selects them. Each gets one int64 key ordered like (row, distance, column) (row and column bits
    around the distance's 32 order-preserving bits); one sort of these keys and a binary search of the
    relevant (and removed) items' keys give every rank at once.
    """
    B, G = distances.shape
    col_bits, row_bits = max(1, (G - 1).bit_length()), max(1, (B - 1).bit_length())
    if row_bits + col_bits > ROW_COLUMN_BITS and B > 1:  # too large for one key: split (never automatic)
        half = B // 2
        top = relevant_ranks(distances[:half], candidates[:half], relevant[:half], removed[:half])
        bottom = relevant_ranks(distances[half:], candidates[half:], relevant[half:], removed[half:])
        width = max(top[0].shape[1], bottom[0].shape[1])
        pad = [torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in (top[0], bottom[0])]
        return torch.cat(pad), torch.cat([top[1], bottom[1]])
    dist_shift = col_bits
    row_shift = 32 + col_bits

    def keys(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return (rows << row_shift) | ((_float_bits(values) + (1 << 31)) << dist_shift) | cols

    cand_dist = distances.gather(1, candidates)
    row_ids = torch.arange(B, device=distances.device)
    cand_keys = keys(cand_dist, row_ids[:, None], candidates)
    num_relevant = relevant.sum(1)
    width = max(int(num_relevant.max()) if B else 0, 1)
    rel_keys = torch.where(relevant, cand_keys, INT64_MAX).sort(dim=1).values[:, :width].contiguous()
    farthest = torch.where(relevant, cand_dist.float(), float("-inf")).max(1).values
    flat = (distances <= farthest[:, None]).view(-1).nonzero().squeeze(1)
    rows = torch.div(flat, G, rounding_mode="floor")
    selected = keys(distances.view(-1).take(flat), rows, flat - rows * G).sort().values
    row_start = row_ids << row_shift
    # items of the row ordered at or before each relevant item (itself included), removed ones too
    ranks = torch.searchsorted(selected, rel_keys, right=True) - torch.searchsorted(selected, row_start)[:, None]
    if bool(removed.any()):
        removed_keys = torch.where(removed, cand_keys, INT64_MAX).flatten().sort().values
        ranks -= torch.searchsorted(removed_keys, rel_keys) - torch.searchsorted(removed_keys, row_start)[:, None]
    return ranks, num_relevant


def sorted_relevant_ranks(
    distances: torch.Tensor, candidates: torch.Tensor, relevant: torch.Tensor, removed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`relevant_ranks` by a stable argsort of every row, for distances of any float precision.

    Used for float64 distance matrices that float32 cannot hold exactly (the 64-bit keys of
    :func:`relevant_ranks` hold a float32 distance and the column); O(G log G) per query.
    """
    B, G = distances.shape
    order = torch.argsort(distances, dim=1, stable=True)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(G, device=order.device).expand(B, G))
    cand_pos = position.gather(1, candidates)
    num_relevant = relevant.sum(1)
    width = max(int(num_relevant.max()) if B else 0, 1)
    rel_pos = torch.where(relevant, cand_pos, G).sort(dim=1).values[:, :width].contiguous()
    removed_pos = torch.where(removed, cand_pos, G).sort(dim=1).values.contiguous()
    return rel_pos + 1 - torch.searchsorted(removed_pos, rel_pos), num_relevant


def nearest_in_order(distances: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices (B x k) of the ``k`` nearest items of each row, exactly in ``(distance, column)`` order.

    NaN entries are excluded items (each row must hold at least ``k`` others). One ``torch.topk`` of
    ``k + 1`` values finds the candidates; the (k+1)-th value tells whether a tie straddles the k-th
    place, and only such rows are redone on the exact 64-bit keys. The k winners are then ordered by key.
    """
    width = min(k + 1, distances.shape[1])
    values, indices = torch.topk(distances, width, dim=1, largest=False, sorted=True)
    if width > k:  # a tie at the boundary: the (k+1)-th value equals the k-th (and is not an excluded NaN)
        tied = (values[:, k] == values[:, k - 1]).nonzero().flatten()
        values, indices = values[:, :k].clone(), indices[:, :k].clone()
        if tied.numel():
            sub = distances[tied]
            keys = order_keys(sub).masked_fill_(torch.isnan(sub), INT64_MAX)
            exact = torch.topk(keys, k, dim=1, largest=False, sorted=True).indices
            indices[tied] = exact
            values[tied] = sub.gather(1, exact)
    order = order_keys(values, indices).argsort(dim=1)
    return indices.gather(1, order)


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
        self._metric = Metric(metric)
        self.vectors = self._metric.prepare(gallery)
        self.sq_norms = (self.vectors * self.vectors).sum(1) if "euclidean" in metric else None

    def prepare_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries in the same space as the gallery (L2-normalised for the cosine metric)."""
        return self._metric.prepare(queries)

    def distances(self, queries: torch.Tensor) -> torch.Tensor:
        """Distances (smaller = closer) of prepared queries to every gallery row, as in centrum.distances.

        Computed in place on the one B x G product (:meth:`centrum.distances.Metric.product_distances`), so
        that a chunk costs one matrix and no temporaries.
        """
        return self._metric.product_distances(queries, self.vectors, self.sq_norms)

    def rowwise_distances(self, queries: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Distance of each prepared query to the matching row of ``others`` (raw, prepared here)."""
        others = self._metric.prepare(others)
        dots = (queries * others).sum(1)
        if self.sq_norms is None:  # cosine (rows already unit) or inner product: no norms needed
            return self._metric.from_gram(dots, None, None)
        return self._metric.from_gram(dots, (queries * queries).sum(1), (others * others).sum(1))


class DistanceBlocks:
    """The query x gallery distances of consecutive query blocks, from embeddings or from a given matrix.

    ``block(rows)`` returns the B x G distances (smaller = closer) of the queries in ``rows`` and
    ``ranks(...)`` the relevant ranks on them: :func:`relevant_ranks` on float32 distances (computed in
    float32 from embeddings, or a float32 / exactly float32-representable matrix), else
    :func:`sorted_relevant_ranks` on the float64 values as given.
    """

    def __init__(self, queries: torch.Tensor | None, prepared: PreparedGallery | None, matrix: torch.Tensor | None):
        self.queries, self.prepared, self.matrix = queries, prepared, matrix

    @classmethod
    def from_embeddings(cls, queries: torch.Tensor, gallery: torch.Tensor, metric: str) -> DistanceBlocks:
        return cls(queries, PreparedGallery(gallery, metric), None)

    @classmethod
    def from_matrix(cls, distances: torch.Tensor) -> DistanceBlocks:
        return cls(None, None, distances)

    @property
    def shape(self) -> tuple[int, int]:
        if self.matrix is not None:
            return tuple(self.matrix.shape)
        return self.queries.shape[0], self.prepared.vectors.shape[0]

    def block(self, rows: slice) -> torch.Tensor:
        if self.matrix is None:
            return self.prepared.distances(self.prepared.prepare_queries(self.queries[rows]))
        block = self.matrix[rows].contiguous()  # a copy only for a non-contiguous (e.g. transposed) matrix
        if block.dtype == torch.float32:
            return block
        as32 = block.float()
        return as32 if bool((as32.double() == block).all()) else block

    @staticmethod
    def ranks(
        distances: torch.Tensor, candidates: torch.Tensor, relevant: torch.Tensor, removed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fn = relevant_ranks if distances.dtype == torch.float32 else sorted_relevant_ranks
        return fn(distances, candidates, relevant, removed)
