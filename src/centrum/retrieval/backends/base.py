"""The interface every index backend implements, and the bookkeeping they share.

Two kinds of index: a per-image index (:class:`ImageIndex`: one entry per embedding, with a label, a camera id,
a path and an integer id) and a centroid index (:class:`CentroidStore`: one entry per class, the running mean of
the embeddings enrolled under its label). Every backend reports distances in the same convention, whatever its
engine computes internally: ``cosine`` = 1 - cos (vectors L2-normalised), ``euclidean`` = L2 distance,
``dot`` = minus the inner product; smaller is closer.

The re-identification rule (a gallery entry with the query's identity *and* the query's camera is
not a valid match) is a search option: pass ``query_labels`` and ``query_cameras`` and those entries are
excluded before the top-k is taken, so k valid entries come back whenever k exist.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

METRICS: tuple[str, ...] = ("cosine", "euclidean", "dot")


@dataclass
class SearchHits:
    """The k nearest entries of each of Q queries, nearest first (NumPy arrays, Q x K).

    ``ids``: the entries' ids (for a centroid index: the class labels; -1 where fewer than k entries
    qualify); ``distances``: in the index's metric, smaller = closer (inf where missing); ``labels`` and
    ``cameras``: the entries' label and camera (-1 = none or missing); ``paths``: object array of the
    entries' paths (``""`` = none or missing).
    """

    ids: np.ndarray
    distances: np.ndarray
    labels: np.ndarray
    cameras: np.ndarray
    paths: np.ndarray


@runtime_checkable
class ImageIndex(Protocol):
    """A per-image embedding index: every entry an embedding with an id, a label, a camera and a path."""

    dim: int
    metric: str

    def add(
        self,
        embeddings: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        paths: Sequence[str] | None = None,
        cameras: Sequence[int] | np.ndarray | None = None,
        ids: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Add N embeddings (N x dim) with their labels (and optional paths, cameras, ids); return their ids.
        Ids not given are allocated after the largest id so far; a given id already present is an error."""
        ...

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete the entries with these ids; return how many existed."""
        ...

    def remove_class(self, label: int) -> int:
        """Delete every entry with this label; return how many there were."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        query_labels: Sequence[int] | np.ndarray | None = None,
        query_cameras: Sequence[int] | np.ndarray | None = None,
    ) -> SearchHits:
        """The k nearest entries of each query (Q x dim). With ``query_labels`` and ``query_cameras``
        (Q each), entries with the query's label and camera are excluded (the re-identification rule)."""
        ...

    def __len__(self) -> int:
        """The number of entries."""
        ...

    def class_counts(self) -> dict[int, int]:
        """The number of entries of each label."""
        ...

    def save(self, directory: str | os.PathLike) -> None:
        """Persist the index (a directory for the embedded backends; a no-op flush for a Qdrant server)."""
        ...


@runtime_checkable
class CentroidStore(Protocol):
    """A class-centroid index: one entry per label, the running mean of the embeddings enrolled under it."""

    dim: int
    metric: str

    def add(self, embeddings: np.ndarray, labels: Sequence[int] | np.ndarray) -> None:
        """Enrol N embeddings (N x dim) into the centroids of their labels (running mean; new labels are
        new classes). For ``cosine`` each embedding is L2-normalised before averaging."""
        ...

    def remove_class(self, label: int) -> int:
        """Delete the class ``label``; return the number of embeddings its centroid averaged (0 if absent)."""
        ...

    def search(self, queries: np.ndarray, k: int = 10) -> SearchHits:
        """The k nearest class centroids of each query; ``ids`` and ``labels`` are the class labels."""
        ...

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, means)``: every class label (C, sorted) and its centroid (C x dim, the running mean)."""
        ...

    def __len__(self) -> int:
        """The number of classes."""
        ...

    def class_counts(self) -> dict[int, int]:
        """The number of embeddings averaged into each class centroid."""
        ...

    def save(self, directory: str | os.PathLike) -> None:
        """Persist the index."""
        ...


# shared checks ------------------------------------------------------------------------------------------------
def check_metric(metric: str) -> str:
    """``metric`` if every backend supports it, else a ``ValueError`` listing the ones that are."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} for an index backend; choose one of {', '.join(METRICS)}")
    return metric


def check_k(k: int) -> int:
    """A positive number of neighbours."""
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def as_matrix(x, dim: int, name: str = "embeddings") -> np.ndarray:
    """``x`` as a C-contiguous float32 N x dim matrix of finite values, or a ``ValueError`` naming it."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1 and a.shape[0] == dim:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{name} must be N x {dim}, got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return np.ascontiguousarray(a)


def as_ints(values, n: int, name: str, default: int | None = -1) -> np.ndarray:
    """``values`` as an int64 vector of length ``n``; ``None`` gives ``default`` everywhere."""
    if values is None:
        if default is None:
            raise ValueError(f"{name} are required")
        return np.full(n, default, dtype=np.int64)
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    a = np.asarray(values)
    if a.ndim == 0:
        a = a[None]
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries, got shape {tuple(a.shape)}")
    if a.size and not np.issubdtype(a.dtype, np.integer) and not np.all(np.equal(np.mod(a, 1), 0)):
        raise ValueError(f"{name} must be integers")
    return a.astype(np.int64)


def as_paths(paths, n: int) -> list[str]:
    """``paths`` as N strings (``""`` everywhere when ``None``)."""
    if paths is None:
        return [""] * n
    out = [os.fspath(p) if isinstance(p, os.PathLike) else str(p) for p in paths]
    if len(out) != n:
        raise ValueError(f"paths must have {n} entries, got {len(out)}")
    return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (rows of zeros stay zero), float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def exclusion_pairs(query_labels, query_cameras, q: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The (label, camera) of each query when the re-id rule is asked for (both given), else ``None``."""
    if query_labels is None and query_cameras is None:
        return None
    if query_labels is None or query_cameras is None:
        raise ValueError("the re-identification exclusion needs both query_labels and query_cameras")
    return as_ints(query_labels, q, "query_labels"), as_ints(query_cameras, q, "query_cameras")


def empty_hits(q: int, k: int) -> SearchHits:
    """Q x K hits with nothing found."""
    return SearchHits(
        ids=np.full((q, k), -1, np.int64),
        distances=np.full((q, k), np.inf, np.float32),
        labels=np.full((q, k), -1, np.int64),
        cameras=np.full((q, k), -1, np.int64),
        paths=np.full((q, k), "", dtype=object),
    )


def order_hits(ids: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by distance, equal distances by id (so every exact backend breaks ties alike);
    missing entries (id -1, distance inf) last."""
    key_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_ids, distances), axis=1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(distances, order, 1)


class Metadata:
    """The id, label, camera and path of every entry, in insertion order, with id -> row lookup."""

    def __init__(self) -> None:
        self.ids = np.empty(0, np.int64)
        self.labels = np.empty(0, np.int64)
        self.cameras = np.empty(0, np.int64)
        self.paths = np.empty(0, dtype=object)
        self._row_of: dict[int, int] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def allocate(self, ids, n: int) -> np.ndarray:
        """The ids of N new entries: the given ones (checked unique and unused) or the next free ones."""
        if ids is None:
            out = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            out = as_ints(ids, n, "ids")
            if (out < 0).any():
                raise ValueError(f"ids must be non-negative, got {int(out.min())}")
            if np.unique(out).shape[0] != n:
                raise ValueError("ids contain duplicates")
            taken = [int(i) for i in out if int(i) in self._row_of]
            if taken:
                raise ValueError(f"ids already in the index: {taken[:5]}")
        return out

    def append(self, ids: np.ndarray, labels: np.ndarray, cameras: np.ndarray, paths: list[str]) -> None:
        """Record N new entries (ids from :meth:`allocate`)."""
        start = len(self)
        self.ids = np.concatenate([self.ids, ids])
        self.labels = np.concatenate([self.labels, labels])
        self.cameras = np.concatenate([self.cameras, cameras])
        self.paths = np.concatenate([self.paths, np.array(paths, dtype=object)])
        self._row_of.update({int(i): start + r for r, i in enumerate(ids)})
        if ids.size:
            self._next_id = max(self._next_id, int(ids.max()) + 1)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id (-1 for an unknown id or -1)."""
        flat = ids.ravel()
        return np.fromiter((self._row_of.get(int(i), -1) for i in flat), np.int64, flat.size).reshape(ids.shape)

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` is true (the id counter never goes back)."""
        self.ids, self.labels = self.ids[mask], self.labels[mask]
        self.cameras, self.paths = self.cameras[mask], self.paths[mask]
        self._row_of = {int(i): r for r, i in enumerate(self.ids)}

    def class_counts(self) -> dict[int, int]:
        """The number of entries of each label."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def hits(self, ids: np.ndarray, distances: np.ndarray) -> SearchHits:
        """Hits for these ids (Q x K, -1 = missing), with their metadata looked up."""
        rows = self.rows(ids)
        missing = rows < 0
        safe = np.where(missing, 0, rows)
        if len(self) == 0:
            return empty_hits(*ids.shape)
        return SearchHits(
            ids=np.where(missing, -1, ids).astype(np.int64),
            distances=np.where(missing, np.inf, distances).astype(np.float32),
            labels=np.where(missing, -1, self.labels[safe]),
            cameras=np.where(missing, -1, self.cameras[safe]),
            paths=np.where(missing, "", self.paths[safe]).astype(object),
        )

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save (paths as a unicode array: no pickling)."""
        return {
            "ids": self.ids,
            "labels": self.labels,
            "cameras": self.cameras,
            "paths": self.paths.astype(str) if len(self) else np.empty(0, dtype=str),
            "next_id": np.array([self._next_id], np.int64),
        }

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]) -> Metadata:
        """The inverse of :meth:`state`."""
        meta = cls()
        meta.append(
            arrays["ids"].astype(np.int64),
            arrays["labels"].astype(np.int64),
            arrays["cameras"].astype(np.int64),
            [str(p) for p in arrays["paths"]],
        )
        meta._next_id = int(arrays["next_id"][0])
        return meta


def filtered_search(raw_search, meta: Metadata, queries: np.ndarray, k: int, exclude, total: int) -> SearchHits:
    """Top-k over a raw engine search ``raw_search(queries, kk) -> (ids, distances)`` that may return ids
    no longer present (tombstones) or excluded by the re-id rule: ask for more neighbours, doubling, until
    every query has k valid ones or the whole index was returned. Exact when the engine is exact."""
    q = queries.shape[0]
    out_ids = np.full((q, k), -1, np.int64)
    out_d = np.full((q, k), np.inf, np.float32)
    pending = np.arange(q)
    kk = min(total, k + 16 if exclude is not None else k)
    while pending.size and kk > 0:
        ids, dist = raw_search(queries[pending], kk)
        rows = meta.rows(ids)
        valid = rows >= 0
        if exclude is not None:
            q_lab, q_cam = exclude[0][pending][:, None], exclude[1][pending][:, None]
            safe = np.where(valid, rows, 0)
            valid &= ~((meta.labels[safe] == q_lab) & (meta.cameras[safe] == q_cam))
        done = []
        for j, qi in enumerate(pending):
            keep = np.flatnonzero(valid[j])
            if keep.size >= k or kk >= total:
                take = keep[:k]
                out_ids[qi, : take.size] = ids[j, take]
                out_d[qi, : take.size] = dist[j, take]
                done.append(j)
        pending = np.delete(pending, done)
        kk = min(total, kk * 2)
    out_ids, out_d = order_hits(out_ids, out_d)
    return meta.hits(out_ids, out_d)


def to_distance(scores: np.ndarray, metric: str, squared: bool = False) -> np.ndarray:
    """An engine's scores in centrum's distance convention: inner products for ``cosine``/``dot`` (1 - s,
    -s), squared L2 (``squared=True``) or L2 for ``euclidean``."""
    if metric == "cosine":
        return np.maximum(1.0 - scores, 0.0).astype(np.float32)  # cos of unit rows may round past 1
    if metric == "dot":
        return (-scores).astype(np.float32)
    return (np.sqrt(np.maximum(scores, 0.0)) if squared else scores).astype(np.float32)


def running_mean(
    old: np.ndarray, old_counts: np.ndarray, sums: np.ndarray, added: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids after enrolling ``added[i]`` embeddings summing to ``sums[i]`` into a class whose mean of
    ``old_counts[i]`` embeddings was ``old[i]``: ``old + (sums - added old) / (old_counts + added)``."""
    total = old_counts + added
    mean = old.astype(np.float64) + (sums - added[:, None] * old) / total[:, None]
    return mean, total
