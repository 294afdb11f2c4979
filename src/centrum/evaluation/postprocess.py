"""Post-processing of a retrieval before it is scored: k-reciprocal re-ranking and query expansion.

- :func:`k_reciprocal_distances`: the k-reciprocal re-ranking of Zhong et al. (CVPR 2017), exactly as the
  widely copied ``re_ranking`` (the authors' code, torchreid's ``rerank.py``) defines it, but sparse: memory
  O(N k) plus one block of distances, never an N x N matrix (N = queries + gallery);
- :func:`alpha_query_expansion` (alpha-QE, Radenovic et al. 2018) and :func:`database_augmentation` (DBA):
  each query / gallery embedding replaced by the weighted mean of itself and its k nearest gallery items.

The definition followed by :func:`k_reciprocal_distances` (the reference code's, stated here because the
paper leaves parts of it open), with all N = Q + G items (queries first, then gallery):

1. ``D(i, j)``: the squared Euclidean distance of the embeddings (L2-normalised first for ``metric="cosine"``),
   computed in float32 by the matrix product; ``d(i, j) = D(i, j) / max_m D(i, m)`` is the original distance
   (the reference divides by the column max of the symmetric matrix, i.e. by the row max; a row of all
   zeros gives d = 0);
2. ``N(i, k)``: the k nearest items of i, i itself included, in ascending ``(D, index)`` order (ties by
   index; the reference sorts the row without a tie rule);
3. ``R(i, k) = {j in N(i, k + 1) : i in N(j, k + 1)}``, the k-reciprocal set; its expansion ``R*(i)`` adds
   ``R(c, round(k1 / 2))`` (round half to even, as NumPy) for every ``c in R(i, k1)`` with
   ``|R(c, k1/2) & R(i, k1)| > 2/3 |R(c, k1/2)|`` (strictly, as the code);
4. ``V(i, j) = exp(-d(i, j)) / sum_{m in R*(i)} exp(-d(i, m))`` for ``j in R*(i)``, else 0;
5. local query expansion (``k2 > 1``): ``V(i) <- mean of V(m) over m in N(i, k2)``;
6. ``Jaccard(i, j) = 1 - s / (2 - s)`` with ``s = sum_m min(V(i, m), V(j, m))``: 1 where the supports do not
   overlap, so the order there falls back to the original distance;
7. the re-ranked distance of query i to gallery item j: ``(1 - lambda) Jaccard(i, j) + lambda d(i, j)``.

Sparse computation: one pass of blocks of rows over the N x N distances keeps the ``max(k1 + 1, k2)``
nearest of every item (exact ``(distance, index)`` order, :func:`nearest_in_order`) and each row's max;
the sets, V and its expansion are sparse rows of O(k) entries; for a block of queries the overlap sums
``s`` are accumulated only over the pairs that share a support item (an inverted index of the gallery's
V), then the block's query x gallery distances are recomputed once for ``d``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from centrum.distances import check_metric, l2_normalize
from centrum.evaluation._inputs import ArrayLike
from centrum.evaluation._ranking import auto_chunk_size, nearest_in_order, serial_on_cpu
from centrum.evaluation._symmetric import block_distance_function, symmetric_nearest_keys
from centrum.validation import check_embeddings

# (query, support item, gallery item) triples accumulated at once for the Jaccard overlap of a block
PAIR_ELEMENTS = 1 << 20
# rows of a square block of the symmetric all-items distance pass (8M float32 distances, 32 MB)
SYMMETRIC_SIDE = 2896


def _check_vectors(x: ArrayLike, name: str, metric: str) -> torch.Tensor:
    check_metric(metric)
    if metric == "dot":
        raise ValueError(
            "k-reciprocal re-ranking needs a distance: use metric 'cosine', 'euclidean' or 'squared_euclidean', "
            "not 'dot'"
        )
    e = check_embeddings(x, name)
    return l2_normalize(e) if metric == "cosine" else e.float()


def _squared_block(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """float32 squared Euclidean distances of the rows of ``a`` to those of ``b`` (|a|^2 + |b|^2 - 2 a.b)."""
    d2 = a_sq[:, None] + b_sq[None, :]
    return d2.addmm_(a, b.T, alpha=-2.0).clamp_min_(0.0)


def _reciprocal(neighbours: torch.Tensor, k: int, step: int = 4096) -> torch.Tensor:
    """``R(i, k)`` of every item as an N x (k + 1) matrix in neighbour order, -1 where a neighbour is not mutual."""
    n = neighbours.shape[0]
    forward = neighbours[:, : k + 1]
    out = torch.empty_like(forward)
    for start in range(0, n, step):
        f = forward[start : start + step]
        rows = torch.arange(start, start + f.shape[0], device=f.device)
        mutual = (forward[f] == rows[:, None, None]).any(2)
        out[start : start + step] = torch.where(mutual, f, -1)
    return out


def _unique_pairs(rows: torch.Tensor, cols: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.unique(rows * n + cols)  # sorted: by row, then column
    return torch.div(keys, n, rounding_mode="floor"), keys % n


@dataclass
class SparseRows:
    """A sparse N x N matrix by rows: row ``i`` holds ``cols[ptr[i]:ptr[i+1]]`` (ascending) and ``values``."""

    ptr: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor

    @classmethod
    def from_pairs(cls, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> SparseRows:
        """From (row, column)-sorted unique entries."""
        counts = torch.bincount(rows, minlength=n)
        ptr = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
        ptr[1:] = torch.cumsum(counts, 0)
        return cls(ptr, cols, values)

    def expand(self, sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each position p of ``sources`` (row ids), the entries of that row: (position, entry index)."""
        counts = self.ptr[sources + 1] - self.ptr[sources]
        owner = torch.repeat_interleave(torch.arange(sources.shape[0], device=sources.device), counts)
        offsets = torch.cumsum(counts, 0) - counts
        entry = self.ptr[sources][owner] + torch.arange(owner.shape[0], device=sources.device) - offsets[owner]
        return owner, entry


class KReciprocalDistances:
    """The k-reciprocal re-ranked query x gallery distances (module docstring), block by block.

    Building it runs the neighbour pass and the sparse sets (memory O(N k)); :meth:`block` returns the
    float64 re-ranked distances of a block of queries to the whole gallery (smaller = closer) and
    :meth:`dense` the whole Q x G matrix. It can be given as ``distances`` to :func:`reid_metrics` and
    :func:`product_metrics`, which then evaluate one block at a time.
    """

    # query x gallery pairs per block asked of :meth:`block` by the protocols: each block holds a few
    # float64 B x G temporaries (overlaps, distances, the float64 ranking's argsort)
    chunk_elements = 1 << 22

    def __init__(
        self,
        query: ArrayLike,
        gallery: ArrayLike,
        *,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        metric: str = "euclidean",
        chunk_size: int | None = None,
    ) -> None:
        if int(k1) < 1 or int(k2) < 1:
            raise ValueError(f"k1 and k2 must be positive integers, got k1={k1}, k2={k2}")
        if not 0.0 <= float(lambda_value) <= 1.0:
            raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value}")
        q = _check_vectors(query, "query", metric)
        g = _check_vectors(gallery, "gallery", metric).to(q.device)
        if q.shape[1] != g.shape[1]:
            raise ValueError(f"query has {q.shape[1]}-d embeddings but gallery has {g.shape[1]}-d embeddings")
        self.k1, self.k2, self.lambda_value = int(k1), int(k2), float(lambda_value)
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        self.items = torch.cat([q, g])
        self.sq = (self.items * self.items).sum(1)
        self.chunk_size = chunk_size
        self._build(self.items.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(number of queries, number of gallery items)."""
        return self.num_query, self.num_gallery

    @property
    def device(self) -> torch.device:
        """Where the embeddings and the sparse sets live (the blocks are computed there)."""
        return self.items.device

    def _build(self, n: int) -> None:
        k1, k2 = self.k1, self.k2
        width = min(max(k1 + 1, k2), n)
        side = int(self.chunk_size) if self.chunk_size else SYMMETRIC_SIDE
        row_max = torch.full((n,), float("-inf"), dtype=torch.float32, device=self.items.device)
        keys = symmetric_nearest_keys(
            n, width, block_distance_function(self.items, "squared_euclidean"), side, False, row_max
        )
        neighbours = keys & 0xFFFFFFFF
        # squared distances are >= +0.0, whose float bits order like the numbers: the key's high half
        neighbour_d = (keys >> 32).to(torch.int32).view(torch.float32)
        self.row_max = row_max.double()
        self.neighbours = neighbours
        # the k-reciprocal sets and their expansion
        full = _reciprocal(neighbours, min(k1, width - 1))
        half = _reciprocal(neighbours, min(round(k1 / 2), width - 1))
        rows_e, cols_e = [], []
        block = 2048
        for start in range(0, n, block):
            r = full[start : start + block]  # B x K1
            cand = half[r.clamp_min(0)]  # B x K1 x H: R(c, k1/2) of each candidate c
            cand_valid = (cand >= 0) & (r >= 0)[:, :, None]
            in_r = (cand[..., None] == r[:, None, None, :]).any(-1) & cand_valid
            size = cand_valid.sum(2)
            accept = (r >= 0) & (3 * in_r.sum(2) > 2 * size)
            added = torch.where(accept[:, :, None] & cand_valid, cand, -1).flatten(1)
            members = torch.cat([r, added], 1)
            local, pos = (members >= 0).nonzero(as_tuple=True)
            rows_e.append(local + start)
            cols_e.append(members[local, pos])
        rows_e, cols_e = _unique_pairs(torch.cat(rows_e), torch.cat(cols_e), n)
        # V: Gaussian-kernel weights of the original distance, normalised per row
        dist = self._pair_distances(rows_e, cols_e, neighbours, neighbour_d)
        weight = torch.exp(-self._normalised(dist, rows_e))
        sums = torch.zeros(n, dtype=torch.float64, device=weight.device).index_add_(0, rows_e, weight)
        v = SparseRows.from_pairs(rows_e, cols_e, weight / sums[rows_e], n)
        if k2 > 1:  # local query expansion: the mean of the V rows of the k2 nearest
            v = self._expand(v, neighbours[:, :k2], n)
        self.v = v
        # inverted index of the gallery rows of V: for each support item m, the gallery rows with V(j, m) > 0
        lo, hi = v.ptr[self.num_query], v.ptr[n]
        g_rows = torch.repeat_interleave(
            torch.arange(self.num_query, n, device=v.ptr.device),
            v.ptr[self.num_query + 1 :] - v.ptr[self.num_query : n],
        )
        g_cols, g_vals = v.cols[lo:hi], v.values[lo:hi]
        order = torch.argsort(g_cols, stable=True)
        self.inv = SparseRows.from_pairs(g_cols[order], g_rows[order] - self.num_query, g_vals[order], n)

    def _normalised(self, dist: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        m = self.row_max[rows]
        return torch.where(m > 0, dist.double() / m.clamp_min(torch.finfo(torch.float64).tiny), 0.0)

    def _pair_distances(
        self, rows: torch.Tensor, cols: torch.Tensor, neighbours: torch.Tensor, neighbour_d: torch.Tensor
    ) -> torch.Tensor:
        """D(i, j) of the given pairs: from the neighbour lists where j is listed, else from the embeddings."""
        out = torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device)
        step = 1 << 18
        for start in range(0, rows.shape[0], step):
            r, c = rows[start : start + step], cols[start : start + step]
            match = neighbours[r] == c[:, None]
            found = match.any(1)
            value = neighbour_d[r].gather(1, match.to(torch.uint8).argmax(1, keepdim=True)).squeeze(1)
            missing = (~found).nonzero().flatten()
            if missing.numel():
                a, b = self.items[r[missing]], self.items[c[missing]]
                dots = (a * b).sum(1)
                value[missing] = (self.sq[r[missing]] + self.sq[c[missing]] - 2.0 * dots).clamp_min(0.0)
            out[start : start + step] = value
        return out

    @staticmethod
    def _expand(v: SparseRows, nearest: torch.Tensor, n: int) -> SparseRows:
        k2 = nearest.shape[1]
        rows_out, cols_out, vals_out = [], [], []
        block = max(1, PAIR_ELEMENTS // max(1, k2 * int((v.ptr[1:] - v.ptr[:-1]).max())))
        for start in range(0, n, block):
            src = nearest[start : start + block].flatten()
            owner, entry = v.expand(src)
            row = torch.div(owner, k2, rounding_mode="floor") + start
            keys, inverse = torch.unique(row * n + v.cols[entry], return_inverse=True)
            sums = torch.zeros(keys.shape[0], dtype=torch.float64, device=keys.device)
            sums.index_add_(0, inverse, v.values[entry])
            rows_out.append(torch.div(keys, n, rounding_mode="floor"))
            cols_out.append(keys % n)
            vals_out.append(sums / k2)
        return SparseRows.from_pairs(torch.cat(rows_out), torch.cat(cols_out), torch.cat(vals_out), n)

    def block(self, rows: slice) -> torch.Tensor:
        """float64 re-ranked distances (B x G) of the queries in ``rows`` to every gallery item."""
        query_ids = torch.arange(self.num_query, device=self.items.device)[rows]
        b, g = query_ids.shape[0], self.num_gallery
        overlap = torch.zeros(b * g, dtype=torch.float64, device=self.items.device)
        owner, entry = self.v.expand(query_ids)  # the support of each query: (local query, entry)
        support = self.v.cols[entry]
        pair_counts = self.inv.ptr[support + 1] - self.inv.ptr[support]
        bounds = torch.cumsum(pair_counts, 0)
        start, total = 0, owner.shape[0]
        while start < total:  # groups of support entries with at most PAIR_ELEMENTS gallery pairs
            base = int(bounds[start - 1]) if start else 0
            stop = int(torch.searchsorted(bounds, base + PAIR_ELEMENTS, right=True))
            stop = min(max(stop, start + 1), total)
            s = slice(start, stop)
            pos, inv_entry = self.inv.expand(support[s])
            shared = torch.minimum(self.v.values[entry[s]][pos], self.inv.values[inv_entry])
            overlap.index_add_(0, owner[s][pos] * g + self.inv.cols[inv_entry], shared)
            start = stop
        # in place on the one B x G float64 block: (1 - lambda) (1 - s / (2 - s)) + lambda D / max D
        jaccard = overlap.view(b, g)
        denominator = torch.sub(2.0, jaccard)
        jaccard.div_(denominator).neg_().add_(1.0).mul_(1.0 - self.lambda_value)
        del denominator
        d = _squared_block(
            self.items[query_ids], self.sq[query_ids], self.items[self.num_query :], self.sq[self.num_query :]
        )
        m = self.row_max[query_ids]
        scale = torch.where(m > 0, self.lambda_value / m.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
        return jaccard.addcmul_(d, scale[:, None])

    def dense(self) -> torch.Tensor:
        """The whole Q x G re-ranked distance matrix (float64), computed block by block."""
        step = auto_chunk_size(self.num_query, self.num_gallery, self.chunk_size)
        return torch.cat([self.block(slice(s, s + step)) for s in range(0, self.num_query, step)])

    @staticmethod
    def ranks(distances, candidates, relevant, removed):
        """Relevant ranks of a block (as :class:`DistanceBlocks`)."""
        from centrum.evaluation._ranking import DistanceBlocks

        return DistanceBlocks.ranks(distances, candidates, relevant, removed)


def k_reciprocal_distances(
    query: ArrayLike,
    gallery: ArrayLike,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> KReciprocalDistances:
    """k-reciprocal re-ranked distances of ``query`` to ``gallery`` (Zhong et al. 2017; module docstring).

    Defaults k1 = 20, k2 = 6, lambda = 0.3 (the paper's Market-1501 setting). ``metric``: ``"euclidean"`` or
    ``"squared_euclidean"`` (both: the squared Euclidean distance, as the reference code) or ``"cosine"``
    (the squared Euclidean distance of the L2-normalised embeddings, 2 - 2 cos). Returns a
    :class:`KReciprocalDistances`: pass it as ``distances=`` to :func:`reid_metrics` /
    :func:`product_metrics`, or call ``.dense()`` for the Q x G matrix.
    """
    return KReciprocalDistances(
        query, gallery, k1=k1, k2=k2, lambda_value=lambda_value, metric=metric, chunk_size=chunk_size
    )


def _expanded(targets: torch.Tensor, database: torch.Tensor, k: int, alpha: float, exclude_self: bool, step: int):
    """Rows of ``targets`` replaced by normalise(t + sum_j max(cos(t, d_j), 0) ** alpha d_j) over its k nearest
    rows d_j of ``database`` (cosine similarity, ties by index; with ``exclude_self`` row i of the database is
    not a neighbour of target i: the two sets are the same)."""
    n = targets.shape[0]
    k = min(k, database.shape[0] - (1 if exclude_self else 0))
    if k < 1:
        return targets.clone()
    out = torch.empty_like(targets)
    for start in range(0, n, step):
        t = targets[start : start + step]
        dist = 1.0 - t @ database.T  # cosine distance of unit vectors
        if exclude_self:
            local = torch.arange(t.shape[0], device=t.device)
            dist[local, local + start] = float("nan")  # excluded by nearest_in_order
        with serial_on_cpu(dist.device):
            nearest = nearest_in_order(dist, k)
        weight = (1.0 - dist.gather(1, nearest)).clamp_min(0.0).pow(alpha)
        total = t + (weight[:, :, None] * database[nearest]).sum(1)
        out[start : start + step] = l2_normalize(total)
    return out


def _check_expansion(k: int, alpha: float) -> tuple[int, float]:
    if int(k) < 1:
        raise ValueError(f"query expansion k must be a positive integer, got {k}")
    if float(alpha) < 0:
        raise ValueError(f"query expansion alpha must be >= 0, got {alpha}")
    return int(k), float(alpha)


def alpha_query_expansion(
    query: ArrayLike,
    gallery: ArrayLike | None,
    *,
    k: int = 5,
    alpha: float = 3.0,
    same_set: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """alpha-weighted average query expansion (alpha-QE; alpha = 0 is average QE).

    Each query q (L2-normalised) becomes ``normalise(q + sum_{j <= k} max(cos(q, g_j), 0) ** alpha g_j)`` over
    its k nearest gallery embeddings g_j by cosine similarity (ties broken by gallery order). With
    ``same_set`` the queries are the gallery (the metric-learning protocol) and a query is not its own
    neighbour. Returns the expanded queries (float32, unit norm): search them against the gallery with the
    cosine metric. Defaults k = 5, alpha = 3 (fast-reid's).
    """
    k, alpha = _check_expansion(k, alpha)
    q = l2_normalize(check_embeddings(query, "query"))
    g = q if same_set else l2_normalize(check_embeddings(gallery, "gallery")).to(q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query has {q.shape[1]}-d embeddings but gallery has {g.shape[1]}-d embeddings")
    step = auto_chunk_size(q.shape[0], g.shape[0], chunk_size)
    return _expanded(q, g, k, alpha, same_set, step)


def database_augmentation(
    gallery: ArrayLike, *, k: int = 5, alpha: float = 3.0, chunk_size: int | None = None
) -> torch.Tensor:
    """Database-side augmentation (DBA): alpha-QE applied to every gallery embedding against the gallery.

    Each gallery embedding g becomes ``normalise(g + sum_{j <= k} max(cos(g, g_j), 0) ** alpha g_j)`` over its
    k nearest *other* gallery embeddings (cosine; ties by index). Returns the augmented gallery (float32,
    unit norm); queries are then searched against it (optionally expanded by :func:`alpha_query_expansion`).
    """
    k, alpha = _check_expansion(k, alpha)
    g = l2_normalize(check_embeddings(gallery, "gallery"))
    step = auto_chunk_size(g.shape[0], g.shape[0], chunk_size)
    return _expanded(g, g, k, alpha, True, step)


RERANK_METHODS: tuple[str, ...] = ("k-reciprocal",)
EXPANSION_METHODS: tuple[str, ...] = ("alpha-qe", "dba")


def postprocess_arrays(
    protocol: str,
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    *,
    rerank: str | None = None,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    query_expansion: Sequence[str] = (),
    qe_k: int = 5,
    qe_alpha: float = 3.0,
    metric: str = "cosine",
    chunk_size: int | None = None,
) -> tuple[dict, str]:
    """The arrays of :func:`evaluate_protocol` post-processed, and a label of the steps applied.

    Order: DBA on the gallery, then alpha-QE of the queries (against the augmented gallery), then the
    k-reciprocal re-ranking (its ``distances`` replace ``query`` and ``gallery``). Re-ranking serves the
    per-image protocols ``reid`` and ``products`` (a centroid protocol averages embeddings, which re-ranked
    distances are not: it gets the expansion steps only); for ``dml`` only DBA applies (every image is
    both query and gallery).
    """
    steps = list(dict.fromkeys(query_expansion))
    for step in steps:
        if step not in EXPANSION_METHODS:
            raise ValueError(f"unknown query expansion {step!r}; choose from {', '.join(EXPANSION_METHODS)}")
    if rerank is not None and rerank not in RERANK_METHODS:
        raise ValueError(f"unknown re-ranking {rerank!r}; choose from {', '.join(RERANK_METHODS)}")
    out = dict(arrays)
    applied = []
    if protocol == "dml":
        if rerank is not None or "alpha-qe" in steps:
            raise ValueError(
                "the dml protocol ranks every image against all the others: only --query-expansion dba applies "
                "to it (alpha-qe and re-ranking need separate query and gallery sets)"
            )
        if "dba" in steps:
            out["embeddings"] = database_augmentation(
                arrays["embeddings"], k=qe_k, alpha=qe_alpha, chunk_size=chunk_size
            )
            applied.append("dba")
        return out, " + ".join(applied)
    if "distances" in arrays and "query" not in arrays:
        raise ValueError("re-ranking and query expansion need query and gallery embeddings, not a distances matrix")
    if "dba" in steps:
        out["gallery"] = database_augmentation(arrays["gallery"], k=qe_k, alpha=qe_alpha, chunk_size=chunk_size)
        applied.append("dba")
    if "alpha-qe" in steps:
        out["query"] = alpha_query_expansion(
            arrays["query"], out["gallery"], k=qe_k, alpha=qe_alpha, chunk_size=chunk_size
        )
        applied.append("alpha-qe")
    if rerank is not None and not protocol.endswith("centroids"):
        out["distances"] = k_reciprocal_distances(
            out.pop("query"),
            out.pop("gallery"),
            k1=k1,
            k2=k2,
            lambda_value=lambda_value,
            metric="euclidean" if metric == "squared_euclidean" else metric,
            chunk_size=chunk_size,
        )
        applied.append(rerank)
    return out, " + ".join(applied)
