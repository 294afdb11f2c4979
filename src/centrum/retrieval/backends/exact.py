"""The built-in exact torch backend: :class:`~centrum.retrieval.EmbeddingIndex` and
:class:`~centrum.retrieval.CentroidIndex` behind the backend interface (by composition, unchanged).

A saved directory holds the wrapped index's own ``index.npz`` (vectors, labels, cameras: readable by
:func:`centrum.retrieval.load_index`) plus ``backend.npz`` (ids, paths) and ``backend.json`` (which backend
wrote it).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import torch

from centrum.retrieval.backends.base import (
    Metadata,
    SearchHits,
    as_ints,
    as_matrix,
    as_paths,
    check_k,
    check_metric,
    empty_hits,
    exclusion_pairs,
    filtered_search,
    order_hits,
)
from centrum.retrieval.backends.store import read_backend_files, write_backend_files
from centrum.retrieval.centroid import CentroidIndex
from centrum.retrieval.index import EmbeddingIndex


class TorchImageIndex:
    """Exact per-image search on the built-in torch index (what the exact evaluation protocols use).

    Removal rebuilds the wrapped index without the removed rows (O(N)): cheap next to a search over N.
    """

    backend = "torch"
    kind = "image"

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.index = EmbeddingIndex(self.dim, self.metric, backend="torch")
        self.meta = Metadata()

    def __len__(self) -> int:
        return len(self.meta)

    def __repr__(self) -> str:
        return f"TorchImageIndex(dim={self.dim}, metric={self.metric!r}, size={len(self)})"

    def add(self, embeddings, labels, paths=None, cameras=None, ids=None) -> np.ndarray:
        """Add N embeddings with labels (and optional paths, cameras, ids); return their ids."""
        x = as_matrix(embeddings, self.dim)
        n = x.shape[0]
        lab, cams, names = as_ints(labels, n, "labels", None), as_ints(cameras, n, "cameras"), as_paths(paths, n)
        new_ids = self.meta.allocate(ids, n)
        # paths stay in self.meta only: EmbeddingIndex rebuilds a path array of all N entries on every search
        self.index.add(torch.from_numpy(x), lab, None, cams)
        self.meta.append(new_ids, lab, cams, names)
        return new_ids

    def _rebuild(self, keep: np.ndarray) -> None:
        vectors = self.index.vectors[torch.from_numpy(keep)]
        self.meta.keep(keep)
        self.index = EmbeddingIndex(self.dim, self.metric, backend="torch")
        if len(self.meta):
            self.index.add(vectors, self.meta.labels, None, self.meta.cameras)

    def remove(self, ids) -> int:
        """Delete the entries with these ids; return how many existed."""
        gone = np.isin(self.meta.ids, as_ints(ids, len(np.atleast_1d(ids)), "ids"))
        if gone.any():
            self._rebuild(~gone)
        return int(gone.sum())

    def remove_class(self, label: int) -> int:
        """Delete every entry with this label; return how many there were."""
        gone = self.meta.labels == int(label)
        if gone.any():
            self._rebuild(~gone)
        return int(gone.sum())

    def _raw(self, queries: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        result = self.index.search(queries, kk)
        return self.meta.ids[result.indices], result.distances

    def search(self, queries, k: int = 10, query_labels=None, query_cameras=None) -> SearchHits:
        """Exact k nearest entries (equal distances: lower id first); see :class:`ImageIndex`."""
        k = check_k(k)
        q = as_matrix(queries, self.dim, "queries")
        exclude = exclusion_pairs(query_labels, query_cameras, q.shape[0])
        if len(self) == 0:
            return empty_hits(q.shape[0], k)
        return filtered_search(self._raw, self.meta, q, k, exclude, len(self))

    def class_counts(self) -> dict[int, int]:
        """The number of entries of each label."""
        return self.meta.class_counts()

    def save(self, directory: str | os.PathLike) -> None:
        """Write the wrapped index (``index.npz``) and the ids to ``directory``, atomically file by file."""
        self.index.save(directory)
        write_backend_files(directory, self._header(), self.meta.state())

    def _header(self) -> dict:
        return {"backend": self.backend, "kind": self.kind, "dim": self.dim, "metric": self.metric}

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TorchImageIndex:
        """Read a directory written by :meth:`save`."""
        header, arrays = read_backend_files(directory, cls.backend, cls.kind)
        out = cls(header["dim"], header["metric"])
        out.index = EmbeddingIndex.load(pathlib.Path(directory), header["dim"])
        out.meta = Metadata.from_state(arrays)
        if len(out.index) != len(out.meta):
            raise ValueError(f"index at {directory} is corrupt: {len(out.index)} vectors but {len(out.meta)} ids")
        return out


class TorchCentroidStore:
    """Exact class-centroid search on the built-in :class:`~centrum.retrieval.CentroidIndex` (running means)."""

    backend = "torch"
    kind = "centroid"

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.index = CentroidIndex(self.dim, self.metric)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"TorchCentroidStore(dim={self.dim}, metric={self.metric!r}, classes={len(self)})"

    def add(self, embeddings, labels) -> None:
        """Enrol N embeddings into their classes' running means."""
        x = as_matrix(embeddings, self.dim)
        lab = check_class_labels(labels, x.shape[0])
        self.index.add(torch.from_numpy(x), torch.from_numpy(lab))

    def remove_class(self, label: int) -> int:
        """Delete the class ``label``; return its count (0 if absent)."""
        count = self.class_counts().get(int(label), 0)
        if count:
            self.index.remove(int(label))
        return count

    def search(self, queries, k: int = 10) -> SearchHits:
        """Exact k nearest centroids (equal distances: lower label first)."""
        k = check_k(k)
        q = as_matrix(queries, self.dim, "queries")
        if len(self) == 0:
            return empty_hits(q.shape[0], k)
        result = self.index.search(torch.from_numpy(q), k)
        ids, dist = order_hits(result.labels, result.distances)
        return centroid_hits(ids, dist)

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Class labels (sorted) and their running means."""
        labels = self.index.labels.numpy()
        order = np.argsort(labels)
        return labels[order], self.index.centroids.numpy()[order]

    def class_counts(self) -> dict[int, int]:
        """The number of embeddings averaged into each centroid."""
        return {int(lab): int(c) for lab, c in zip(self.index.labels, self.index.counts, strict=True)}

    def save(self, directory: str | os.PathLike) -> None:
        """Write the wrapped centroid index (``index.npz``) and ``backend.json`` to ``directory``."""
        self.index.save(directory)
        write_backend_files(
            directory, {"backend": self.backend, "kind": self.kind, "dim": self.dim, "metric": self.metric}, {}
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TorchCentroidStore:
        """Read a directory written by :meth:`save`."""
        header, _ = read_backend_files(directory, cls.backend, cls.kind)
        out = cls(header["dim"], header["metric"])
        out.index = CentroidIndex.load(pathlib.Path(directory), header["dim"])
        return out


def check_class_labels(labels, n: int) -> np.ndarray:
    """Class labels for a centroid index: N non-negative integers (they are the entries' ids)."""
    lab = as_ints(labels, n, "labels", None)
    if (lab < 0).any():
        raise ValueError(f"class labels must be non-negative integers, got {int(lab.min())}")
    return lab


def centroid_hits(ids: np.ndarray, distances: np.ndarray) -> SearchHits:
    """Hits of a centroid search: the ids are the labels; no cameras or paths."""
    missing = ids < 0
    return SearchHits(
        ids=ids.astype(np.int64),
        distances=np.where(missing, np.inf, distances).astype(np.float32),
        labels=ids.astype(np.int64),
        cameras=np.full(ids.shape, -1, np.int64),
        paths=np.full(ids.shape, "", dtype=object),
    )
