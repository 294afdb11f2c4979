"""faiss backends: exact flat search, IVF-PQ (compressed vectors in inverted lists: large galleries in little
memory) and HNSW (graph search: low latency), behind the backend interface.

* ``flat``: ``IndexIDMap2(IndexFlat)``: exact, same top-k as the torch backend.
* ``ivfpq``: ``IndexIVFPQ``: ``nlist`` k-means cells (default 4 sqrt(N), at most N/39), each vector stored as
  ``pq_m`` codes of ``pq_bits`` bits (default dim/4 codes of 8 bits: 16x smaller than float32); ``nprobe``
  cells visited per query. The quantisers are trained on the vectors present at the first search or save
  (at most ``train_size`` of them, drawn with a fixed seed); vectors added before that wait in a buffer.
* ``hnsw``: ``IndexHNSWFlat`` with ``hnsw_m`` links per node, ``ef_construction`` / ``ef_search``
  candidates. HNSW cannot delete: removed entries stay in the graph as tombstones, skipped at search time.

Approximate backends (ivfpq, hnsw) trade recall for speed: ``benchmarks/scale.py`` and the tests report their
recall@10 against exact search.
"""

from __future__ import annotations

import math
import os

import numpy as np

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
    l2_normalize,
    order_hits,
    running_mean,
    to_distance,
)
from centrum.retrieval.backends.exact import centroid_hits, check_class_labels
from centrum.retrieval.backends.store import read_backend_files, write_backend_files

FAISS_KINDS: tuple[str, ...] = ("flat", "ivfpq", "hnsw")


def import_faiss():
    """The faiss module, or a ``ValueError`` saying how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise ValueError("the faiss backends need faiss: pip install faiss-cpu (or use backend 'torch')") from exc
    return faiss


def default_pq_m(dim: int) -> int:
    """The number of PQ sub-quantisers: the largest divisor of ``dim`` that is at most dim/4 (4-d pieces)."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


class _FaissEngine:
    """One faiss structure of the chosen kind, with ids, in centrum's metric convention."""

    def __init__(self, dim: int, metric: str, kind: str, options: dict) -> None:
        if kind not in FAISS_KINDS:
            raise ValueError(f"unknown faiss index kind {kind!r}; choose one of {', '.join(FAISS_KINDS)}")
        self.faiss = import_faiss()
        self.dim, self.metric, self.kind = dim, metric, kind
        self.options = {
            "nlist": None,
            "nprobe": 16,
            "pq_m": None,
            "pq_bits": 8,
            "hnsw_m": 32,
            "ef_construction": 80,
            "ef_search": 64,
            "train_size": 100_000,
            **{key: value for key, value in options.items() if value is not None},
        }
        self.inner = metric in ("cosine", "dot")
        self.index = None  # built at once (flat, hnsw) or when trained (ivfpq)
        self.pending_x = np.empty((0, dim), np.float32)
        self.pending_ids = np.empty(0, np.int64)
        if kind != "ivfpq":
            self.index = self._new_index(0)

    @property
    def ntotal(self) -> int:
        return (self.index.ntotal if self.index is not None else 0) + int(self.pending_ids.shape[0])

    def _new_index(self, n_train: int):
        faiss, dim = self.faiss, self.dim
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.inner else faiss.METRIC_L2
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(dim) if self.inner else faiss.IndexFlatL2(dim))
        if self.kind == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, int(self.options["hnsw_m"]), faiss_metric)
            graph.hnsw.efConstruction = int(self.options["ef_construction"])
            return faiss.IndexIDMap2(graph)
        nlist = self.options["nlist"] or max(1, min(int(4 * math.sqrt(n_train)), n_train // 39))
        pq_m = int(self.options["pq_m"] or default_pq_m(dim))
        if dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the dimension {dim}")
        pq_bits = int(min(self.options["pq_bits"], max(1, int(math.log2(max(n_train, 2))))))
        self.options.update(nlist=int(nlist), pq_m=pq_m, pq_bits=pq_bits)
        quantizer = faiss.IndexFlatIP(dim) if self.inner else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, int(nlist), pq_m, pq_bits, faiss_metric)
        return index

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize(x) if self.metric == "cosine" else np.ascontiguousarray(x, dtype=np.float32)

    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        x = self.prepare(x)
        if self.index is None:
            self.pending_x = np.concatenate([self.pending_x, x])
            self.pending_ids = np.concatenate([self.pending_ids, ids])
        else:
            self.index.add_with_ids(x, ids)

    def train(self) -> None:
        """Train the IVF-PQ quantisers on the buffered vectors and move them into the index."""
        if self.index is not None or not self.pending_ids.size:
            return
        n = self.pending_x.shape[0]
        sample = self.pending_x
        if n > self.options["train_size"]:
            rows = np.random.default_rng(0).choice(n, int(self.options["train_size"]), replace=False)
            sample = self.pending_x[np.sort(rows)]
        index = self._new_index(n)
        index.train(sample)
        index.add_with_ids(self.pending_x, self.pending_ids)
        self.index = index
        self.pending_x = np.empty((0, self.dim), np.float32)
        self.pending_ids = np.empty(0, np.int64)

    def remove(self, ids: np.ndarray) -> None:
        """Delete ids where the structure can (flat, IVF-PQ); HNSW keeps them as tombstones."""
        if self.index is None:
            keep = ~np.isin(self.pending_ids, ids)
            self.pending_x, self.pending_ids = self.pending_x[keep], self.pending_ids[keep]
        elif self.kind != "hnsw":
            self.index.remove_ids(self.faiss.IDSelectorBatch(ids.astype(np.int64)))

    def search(self, queries: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        self.train()
        if self.index is None or self.index.ntotal == 0:
            return np.full((queries.shape[0], kk), -1, np.int64), np.full((queries.shape[0], kk), np.inf, np.float32)
        q = self.prepare(queries)
        if self.kind == "ivfpq":
            self.index.nprobe = int(self.options["nprobe"])
        elif self.kind == "hnsw":
            self.faiss.downcast_index(self.index.index).hnsw.efSearch = max(int(self.options["ef_search"]), kk)
        scores, ids = self.index.search(q, kk)
        dist = to_distance(scores, self.metric, squared=True)
        return ids.astype(np.int64), np.where(ids < 0, np.inf, dist).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        out = {"pending_x": self.pending_x, "pending_ids": self.pending_ids}
        if self.index is not None:
            out["faiss"] = self.faiss.serialize_index(self.index)
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.pending_x = arrays["pending_x"].astype(np.float32)
        self.pending_ids = arrays["pending_ids"].astype(np.int64)
        self.index = self.faiss.deserialize_index(arrays["faiss"]) if "faiss" in arrays else None


class FaissImageIndex:
    """Per-image search on faiss (``kind`` = ``"flat"``, ``"ivfpq"`` or ``"hnsw"``; options as in the module
    docstring). Metadata (labels, cameras, paths) is kept beside the faiss structure, in memory."""

    backend = "faiss"
    kind = "image"

    def __init__(self, dim: int, metric: str = "cosine", index_kind: str = "flat", **options) -> None:
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.index_kind = index_kind
        self.engine = _FaissEngine(self.dim, self.metric, index_kind, options)
        self.meta = Metadata()

    def __len__(self) -> int:
        return len(self.meta)

    def __repr__(self) -> str:
        return f"FaissImageIndex(dim={self.dim}, metric={self.metric!r}, kind={self.index_kind!r}, size={len(self)})"

    def add(self, embeddings, labels, paths=None, cameras=None, ids=None) -> np.ndarray:
        """Add N embeddings with labels (and optional paths, cameras, ids); return their ids."""
        x = as_matrix(embeddings, self.dim)
        n = x.shape[0]
        lab, cams, names = as_ints(labels, n, "labels", None), as_ints(cameras, n, "cameras"), as_paths(paths, n)
        new_ids = self.meta.allocate(ids, n)
        self.engine.add(x, new_ids)
        self.meta.append(new_ids, lab, cams, names)
        return new_ids

    def _remove_mask(self, gone: np.ndarray) -> int:
        if gone.any():
            self.engine.remove(self.meta.ids[gone])
            self.meta.keep(~gone)
        return int(gone.sum())

    def remove(self, ids) -> int:
        """Delete the entries with these ids; return how many existed."""
        wanted = np.atleast_1d(np.asarray(ids))
        return self._remove_mask(np.isin(self.meta.ids, as_ints(wanted, wanted.shape[0], "ids")))

    def remove_class(self, label: int) -> int:
        """Delete every entry with this label; return how many there were."""
        return self._remove_mask(self.meta.labels == int(label))

    def train(self) -> None:
        """Train IVF-PQ now (otherwise done at the first search or save); a no-op for flat and HNSW."""
        self.engine.train()

    def search(self, queries, k: int = 10, query_labels=None, query_cameras=None) -> SearchHits:
        """k nearest entries (exact for flat; approximate for ivfpq and hnsw); see :class:`ImageIndex`."""
        k = check_k(k)
        q = as_matrix(queries, self.dim, "queries")
        exclude = exclusion_pairs(query_labels, query_cameras, q.shape[0])
        if len(self) == 0:
            return empty_hits(q.shape[0], k)
        return filtered_search(self.engine.search, self.meta, q, k, exclude, self.engine.ntotal)

    def class_counts(self) -> dict[int, int]:
        """The number of entries of each label."""
        return self.meta.class_counts()

    def save(self, directory: str | os.PathLike) -> None:
        """Write the faiss structure (serialised), ids and metadata to ``directory`` (IVF-PQ is trained first)."""
        self.engine.train()
        header = {
            "backend": self.backend,
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "index_kind": self.index_kind,
            "options": self.engine.options,
        }
        write_backend_files(directory, header, {**self.meta.state(), **self.engine.state()})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> FaissImageIndex:
        """Read a directory written by :meth:`save`."""
        header, arrays = read_backend_files(directory, cls.backend, cls.kind)
        out = cls(header["dim"], header["metric"], header["index_kind"], **header["options"])
        out.meta = Metadata.from_state(arrays)
        out.engine.restore(arrays)
        return out


class FaissCentroidStore:
    """Class centroids (running means, float64) searched with faiss. The faiss structure is rebuilt from the
    means at the first search after an enrolment (flat: a copy; HNSW and IVF-PQ: a new build)."""

    backend = "faiss"
    kind = "centroid"

    def __init__(self, dim: int, metric: str = "cosine", index_kind: str = "flat", **options) -> None:
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.index_kind = index_kind
        self.options = options
        _FaissEngine(self.dim, self.metric, index_kind, options)  # checks the kind and that faiss imports
        self.labels = np.empty(0, np.int64)
        self.means = np.empty((0, self.dim), np.float64)
        self.counts = np.empty(0, np.int64)
        self._engine: _FaissEngine | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"FaissCentroidStore(dim={self.dim}, metric={self.metric!r}, kind={self.index_kind!r}, classes={len(self)})"
        )

    def add(self, embeddings, labels) -> None:
        """Enrol N embeddings into their classes' running means (``c += (sum - n c) / (count + n)``)."""
        x = as_matrix(embeddings, self.dim)
        lab = check_class_labels(labels, x.shape[0])
        if self.metric == "cosine":
            x = l2_normalize(x)
        unique, inverse = np.unique(lab, return_inverse=True)
        sums = np.zeros((unique.shape[0], self.dim), np.float64)
        np.add.at(sums, inverse, x.astype(np.float64))
        added = np.bincount(inverse, minlength=unique.shape[0])
        new = unique[~np.isin(unique, self.labels)]
        if new.size:
            self.labels = np.concatenate([self.labels, new])
            self.means = np.concatenate([self.means, np.zeros((new.size, self.dim))])
            self.counts = np.concatenate([self.counts, np.zeros(new.size, np.int64)])
            order = np.argsort(self.labels)
            self.labels, self.means, self.counts = self.labels[order], self.means[order], self.counts[order]
        rows = np.searchsorted(self.labels, unique)
        self.means[rows], self.counts[rows] = running_mean(self.means[rows], self.counts[rows], sums, added)
        self._engine = None

    def remove_class(self, label: int) -> int:
        """Delete the class ``label``; return its count (0 if absent)."""
        hit = self.labels == int(label)
        count = int(self.counts[hit].sum())
        if hit.any():
            self.labels, self.means, self.counts = self.labels[~hit], self.means[~hit], self.counts[~hit]
            self._engine = None
        return count

    def search(self, queries, k: int = 10) -> SearchHits:
        """k nearest class centroids (exact for flat)."""
        k = check_k(k)
        q = as_matrix(queries, self.dim, "queries")
        if len(self) == 0:
            return empty_hits(q.shape[0], k)
        if self._engine is None:
            engine = _FaissEngine(self.dim, self.metric, self.index_kind, dict(self.options))
            engine.add(self.means.astype(np.float32), self.labels)
            engine.train()
            self._engine = engine
        ids, dist = self._engine.search(q, min(k, len(self)))
        if ids.shape[1] < k:
            pad = ((0, 0), (0, k - ids.shape[1]))
            ids, dist = np.pad(ids, pad, constant_values=-1), np.pad(dist, pad, constant_values=np.inf)
        ids, dist = order_hits(ids, dist)
        return centroid_hits(ids, dist)

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Class labels (sorted) and their running means."""
        return self.labels.copy(), self.means.astype(np.float32)

    def class_counts(self) -> dict[int, int]:
        """The number of embeddings averaged into each centroid."""
        return {int(lab): int(c) for lab, c in zip(self.labels, self.counts, strict=True)}

    def save(self, directory: str | os.PathLike) -> None:
        """Write the means, counts and labels to ``directory`` (the faiss structure is rebuilt on load)."""
        header = {
            "backend": self.backend,
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "index_kind": self.index_kind,
            "options": self.options,
        }
        write_backend_files(directory, header, {"labels": self.labels, "means": self.means, "counts": self.counts})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> FaissCentroidStore:
        """Read a directory written by :meth:`save`."""
        header, arrays = read_backend_files(directory, cls.backend, cls.kind)
        out = cls(header["dim"], header["metric"], header["index_kind"], **header["options"])
        out.labels = arrays["labels"].astype(np.int64)
        out.means = arrays["means"].astype(np.float64)
        out.counts = arrays["counts"].astype(np.int64)
        return out
