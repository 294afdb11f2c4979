"""A centroid index: one entry per class, the running mean of the embeddings added to it."""

from __future__ import annotations

import os

import numpy as np
import torch

from centrum.distances import Metric, check_metric
from centrum.retrieval._storage import check_dimension, check_rows, load_arrays, save_arrays
from centrum.retrieval.index import SearchResult, check_k, exact_search, prepare_vectors
from centrum.validation import check_embeddings_labels


class CentroidIndex:
    """One centroid per class: the mean of the embeddings added with that label.

    Adding images to a class updates its centroid as a running mean (``c += (sum - n c) / (count + n)``,
    accumulated in float64), without the images being kept; a class can be removed. With
    ``metric="cosine"`` (default) embeddings are L2-normalised before averaging and searched against
    the direction of each centroid; ``"euclidean"``, ``"squared_euclidean"`` and ``"dot"`` use the raw
    mean. Search is exact (torch). ``class_names`` maps labels to optional names, saved with the index.
    """

    kind = "centroid"

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.class_names: dict[int, str] = {}
        self._centroids = torch.empty(0, self.dim)
        self._counts = torch.empty(0, dtype=torch.long)
        self._labels = torch.empty(0, dtype=torch.long)
        self._size = 0
        self._row_of: dict[int, int] = {}
        self._search_cache: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of classes."""
        return self._size

    def __contains__(self, label: int) -> bool:
        return int(label) in self._row_of

    def __repr__(self) -> str:
        return f"CentroidIndex(dim={self.dim}, metric={self.metric!r}, classes={len(self)})"

    has_paths = False  # one entry per class: no image paths

    def close(self) -> None:
        """Nothing to release (kept so that every opened index folder can be closed alike)."""

    @property
    def centroids(self) -> torch.Tensor:
        """The class centroids (C x D float32), row i of class ``labels[i]``."""
        return self._centroids[: self._size].clone()

    @property
    def counts(self) -> torch.Tensor:
        """The number of embeddings averaged into each centroid (C, int64)."""
        return self._counts[: self._size].clone()

    @property
    def labels(self) -> torch.Tensor:
        """The class label of each centroid row (C, int64)."""
        return self._labels[: self._size].clone()

    def _grow(self, needed: int) -> None:
        capacity = self._centroids.shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, 16)
        for name, fill in (("_centroids", 0.0), ("_counts", 0), ("_labels", 0)):
            old = getattr(self, name)
            new = torch.full((new_capacity, *old.shape[1:]), fill, dtype=old.dtype)
            new[: self._size] = old[: self._size]
            setattr(self, name, new)

    def add(self, embeddings: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Average N embeddings (N x dim) into the centroids of their N integer labels, creating new
        classes as needed. Cost O(N D + new classes D), whatever the number of images seen before."""
        e, lab = check_embeddings_labels(embeddings, labels)
        if e.shape[1] != self.dim:
            raise ValueError(f"embeddings are {e.shape[1]}-d but the index holds {self.dim}-d centroids")
        x = prepare_vectors(e, self.metric).double()
        unique, inverse = torch.unique(lab.cpu(), return_inverse=True)
        sums = torch.zeros(unique.shape[0], self.dim, dtype=torch.float64).index_add_(0, inverse, x)
        added = torch.bincount(inverse, minlength=unique.shape[0])
        new_labels = [int(v) for v in unique if int(v) not in self._row_of]
        self._grow(self._size + len(new_labels))
        for value in new_labels:
            self._row_of[value] = self._size
            self._labels[self._size] = value
            self._size += 1
        rows = torch.tensor([self._row_of[int(v)] for v in unique], dtype=torch.long)
        old = self._centroids[rows].double()
        old_counts = self._counts[rows]
        total = old_counts + added
        self._centroids[rows] = (old + (sums - added[:, None].double() * old) / total[:, None].double()).float()
        self._counts[rows] = total
        self._search_cache = None

    def remove(self, label: int) -> None:
        """Delete the class ``label`` (its centroid and count). The last row moves into its place."""
        key = int(label)
        if key not in self._row_of:
            raise ValueError(f"label {key} is not in the index ({len(self)} classes)")
        row = self._row_of.pop(key)
        last = self._size - 1
        if row != last:
            moved = int(self._labels[last])
            self._centroids[row] = self._centroids[last]
            self._counts[row] = self._counts[last]
            self._labels[row] = moved
            self._row_of[moved] = row
        self._counts[last] = 0
        self._size = last
        self.class_names.pop(key, None)
        self._search_cache = None

    def search(self, queries: torch.Tensor | np.ndarray, k: int = 10) -> SearchResult:
        """The ``k`` nearest classes of each query: ``labels`` (Q x K), their ``distances`` and centroid
        rows (``indices``; rows move when a class is removed). An index of fewer than ``k`` classes
        returns all of them (no padding)."""
        from centrum.validation import check_embeddings

        k = check_k(k)
        if self._size == 0:
            raise ValueError("the index is empty: add embeddings before searching")
        q = check_embeddings(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries are {q.shape[1]}-d but the index holds {self.dim}-d centroids")
        if self._search_cache is None:
            active = self._centroids[: self._size]
            self._search_cache = Metric(self.metric).prepare(active).contiguous()
        kk = min(k, self._size)
        dist, idx = exact_search(prepare_vectors(q, self.metric), [self._search_cache], kk, self.metric)
        dist, idx = dist.numpy(), idx.numpy()
        labels = self._labels[: self._size].numpy()[idx]
        return SearchResult(dist.astype(np.float32), idx.astype(np.int64), labels.astype(np.int64), None)

    def save(self, directory: str | os.PathLike) -> None:
        """Write the index to ``directory/index.npz`` atomically (temporary file, then rename)."""
        header = {
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "size": self._size,
            "class_names": {str(k): v for k, v in self.class_names.items()},
        }
        arrays = {"vectors": self.centroids.numpy(), "counts": self.counts.numpy(), "labels": self.labels.numpy()}
        save_arrays(directory, header, arrays)

    @classmethod
    def load(cls, directory: str | os.PathLike, dim: int | None = None) -> CentroidIndex:
        """Read an index saved by :meth:`save`; ``dim``, when given, must match the stored dimension."""
        header, arrays = load_arrays(directory)
        if header.get("kind") != cls.kind:
            raise ValueError(
                f"index at {directory} is a {header.get('kind')!r} index, not {cls.kind!r}: use load_index"
            )
        check_rows(directory, arrays, ("counts", "labels"))
        index = cls(check_dimension(directory, header, arrays["vectors"], dim), header["metric"])
        n = arrays["vectors"].shape[0]
        index._grow(n)
        index._centroids[:n] = torch.from_numpy(arrays["vectors"].astype(np.float32))
        index._counts[:n] = torch.from_numpy(arrays["counts"].astype(np.int64))
        index._labels[:n] = torch.from_numpy(arrays["labels"].astype(np.int64))
        index._size = n
        index._row_of = {int(v): i for i, v in enumerate(arrays["labels"])}
        index.class_names = {int(k): str(v) for k, v in header.get("class_names", {}).items()}
        return index
