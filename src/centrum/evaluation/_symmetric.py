"""Nearest neighbours of every item of one set among the others, from half of the N x N distance products.

When the queries are the gallery (the metric-learning protocol, the all-items pass of re-ranking) the
distance matrix is symmetric: each ``side x side`` block on or above the diagonal is computed once and
serves its rows and, transposed, its columns. A diagonal block is made exactly symmetric (its upper
triangle mirrored), so ``D(i, j)`` and ``D(j, i)`` are the same float32 number and the result is the
exact ``(distance, index)`` order of one well-defined matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from centrum.distances import Metric
from centrum.evaluation._ranking import INT64_MAX, nearest_in_order, order_keys, serial_on_cpu

BlockDistances = Callable[[slice, slice], torch.Tensor]


def block_distance_function(vectors: torch.Tensor, metric: str) -> BlockDistances:
    """``f(rows, cols)``: the float32 distances (smaller = closer) between two row ranges of prepared
    ``vectors`` (L2-normalised already for ``"cosine"``): :meth:`centrum.distances.Metric.product_distances`,
    the query x gallery path's own formulas, with the squared norms computed once."""
    m = Metric(metric)
    sq = (vectors * vectors).sum(1) if m.name in ("euclidean", "squared_euclidean") else None

    def distances(rows: slice, cols: slice) -> torch.Tensor:
        return m.product_distances(vectors[rows], vectors[cols], None if sq is None else sq[cols])

    return distances


def _mirror_upper(d: torch.Tensor, tile: int = 256) -> None:
    """Copy the upper triangle of the square ``d`` onto its lower one, in place, tile by tile (a whole-matrix
    transposed copy runs out of cache and cost as much as the product itself)."""
    n = d.shape[0]
    for i in range(0, n, tile):
        block = d[i : i + tile, i : i + tile]
        block.copy_(block.triu() + block.triu(1).T)
        for j in range(i + tile, n, tile):
            d[j : j + tile, i : i + tile].copy_(d[i : i + tile, j : j + tile].T)


def symmetric_nearest_keys(
    n: int, k: int, distances: BlockDistances, side: int, exclude_self: bool, row_max: torch.Tensor | None = None
) -> torch.Tensor:
    """int64 keys ``(distance bits, column)`` of the ``k`` nearest items of each of the ``n`` items, ascending.

    ``distances(rows, cols)`` gives a block of the symmetric matrix. With ``exclude_self`` an item is not its
    own neighbour (each row then needs ``k <= n - 1``; else ``k <= n``). ``row_max`` (float32, n), if
    given, receives each row's largest distance. Decode with ``keys & 0xFFFFFFFF`` (columns).
    """
    keys: torch.Tensor | None = None

    def merge(rows: slice, d: torch.Tensor, offset: int, excluded: int) -> None:
        if row_max is not None:
            torch.maximum(row_max[rows], d.max(1).values, out=row_max[rows])
        width = min(k, d.shape[1] - excluded)
        if width < 1:
            return
        with serial_on_cpu(d.device):
            d = d.contiguous()  # a transposed block: one cache-friendly copy on one thread
            local = nearest_in_order(d, width)
            new = order_keys(d.gather(1, local), local + offset)
            merged = torch.cat([keys[rows], new], 1)
            keys[rows] = merged.topk(k, dim=1, largest=False, sorted=True).values

    for a in range(0, n, side):
        rows_a = slice(a, min(a + side, n))
        for b in range(a, n, side):
            rows_b = slice(b, min(b + side, n))
            d = distances(rows_a, rows_b)
            if keys is None:
                keys = torch.full((n, k), INT64_MAX, dtype=torch.int64, device=d.device)
            if a == b:
                with serial_on_cpu(d.device):
                    _mirror_upper(d)
                if exclude_self:
                    d.fill_diagonal_(float("nan"))  # excluded by nearest_in_order
                merge(rows_a, d, b, int(exclude_self))
            else:
                merge(rows_a, d, b, 0)
                merge(rows_b, d.T, a, 0)
            del d
    return keys
