"""A per-image embedding index with metadata: exact torch search, or faiss (flat, IVF, HNSW)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from centrum.distances import Metric, check_metric
from centrum.retrieval._storage import check_dimension, check_rows, load_arrays, save_arrays
from centrum.validation import as_tensor, check_embeddings, check_labels

BACKENDS: tuple[str, ...] = ("torch", "faiss-flat", "faiss-ivf", "faiss-hnsw")
# query x stored-vector block of one exact search step (float32: 4 bytes each, ~64 MB)
SEARCH_BLOCK = 1 << 24
# segments below this many rows are merged with the next add, so that many small adds stay cheap to search
MIN_SEGMENT_ROWS = 65_536


@dataclass
class SearchResult:
    """The k nearest entries of each query, nearest first (NumPy arrays, Q x K).

    ``distances``: in the index's metric (smaller = closer; cosine = 1 - cos); ``indices``: entry
    positions; ``labels``: their labels (-1 = none); ``paths``: their paths (``""`` = none), or ``None``
    when the index holds no paths. K is ``min(k, entries)``: an index smaller than ``k`` returns all its
    entries, without padding (an approximate faiss backend may still mark a slot it could not fill with
    index -1 and distance inf; :meth:`valid` tells them apart).
    """

    distances: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    paths: np.ndarray | None = None

    def valid(self) -> np.ndarray:
        """Q x K mask of the slots that hold an entry (False only where a faiss backend found none)."""
        return self.indices >= 0


def prepare_vectors(x: torch.Tensor, metric: str) -> torch.Tensor:
    """Vectors as stored and searched: float32 on CPU, L2-normalised for the cosine metric."""
    return Metric(metric).prepare(x.detach().float().cpu()).contiguous()


def exact_search(
    queries: torch.Tensor, segments: Sequence[torch.Tensor], k: int, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest rows over ``segments`` (stored in order) for prepared ``queries``.

    Blocks of queries against one segment at a time, keeping a running top-k: memory is bounded by
    the block size, whatever the number of stored vectors.
    """
    measure = Metric(metric)
    step = max(1, SEARCH_BLOCK // max(max((s.shape[0] for s in segments), default=1), 1))
    out_d, out_i = [], []
    for start in range(0, queries.shape[0], step):
        q = queries[start : start + step]
        best_d = torch.empty(q.shape[0], 0)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long)
        offset = 0
        for seg in segments:
            dist = measure.product_distances(q, seg)
            kk = min(k, seg.shape[0])
            d, i = torch.topk(dist, kk, dim=1, largest=False, sorted=False)
            best_d = torch.cat([best_d, d], 1)
            best_i = torch.cat([best_i, i + offset], 1)
            if best_d.shape[1] > k:
                best_d, keep = torch.topk(best_d, k, dim=1, largest=False, sorted=False)
                best_i = best_i.gather(1, keep)
            offset += seg.shape[0]
        best_i, order = best_i.sort(dim=1)  # equal distances: lower index first
        best_d, order2 = best_d.gather(1, order).sort(dim=1, stable=True)
        out_d.append(best_d)
        out_i.append(best_i.gather(1, order2))
    return torch.cat(out_d), torch.cat(out_i)


def check_k(k: int) -> int:
    """A positive number of neighbours."""
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


class EmbeddingIndex:
    """An index of embeddings with their labels, paths and camera ids: add, search top-k, save, load.

    ``metric``: ``"cosine"`` (default; vectors are stored L2-normalised), ``"euclidean"``,
    ``"squared_euclidean"`` or ``"dot"``. ``backend``: ``"torch"`` (exact, default), ``"faiss-flat"``
    (exact), ``"faiss-ivf"`` (inverted lists: ``nlist`` cells, default 4 sqrt(N), trained on the
    vectors present at the first search; ``nprobe`` cells visited) or ``"faiss-hnsw"`` (graph with
    ``hnsw_m`` links per node, ``ef_search`` candidates). The faiss backends need faiss installed.
    The vectors are always kept, so that an index can be saved and rebuilt on any backend.
    """

    kind = "embedding"

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        backend: str = "torch",
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 64,
    ) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend != "torch":
            _import_faiss(backend)
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.backend = backend
        self.params = {"nlist": nlist, "nprobe": int(nprobe), "hnsw_m": int(hnsw_m), "ef_search": int(ef_search)}
        self._segments: list[torch.Tensor] = []
        self._labels: list[np.ndarray] = []
        self._cameras: list[np.ndarray] = []
        self._paths: list[str] = []
        self._has_paths = False
        self.class_names: dict[int, str] = {}
        self._faiss = None
        self._faiss_count = 0

    def __len__(self) -> int:
        return sum(s.shape[0] for s in self._segments)

    def __repr__(self) -> str:
        return f"EmbeddingIndex(dim={self.dim}, metric={self.metric!r}, backend={self.backend!r}, size={len(self)})"

    @property
    def has_paths(self) -> bool:
        """True when some entry was added with an image path."""
        return self._has_paths and any(self._paths)

    def close(self) -> None:
        """Nothing to release (kept so that every opened index folder can be closed alike)."""

    @property
    def vectors(self) -> torch.Tensor:
        """All stored vectors (N x D float32; L2-normalised for cosine), in insertion order."""
        return torch.cat(self._segments) if self._segments else torch.empty(0, self.dim)

    @property
    def labels(self) -> np.ndarray:
        """The label of every entry (int64; -1 where none was given)."""
        return np.concatenate(self._labels) if self._labels else np.empty(0, np.int64)

    @property
    def cameras(self) -> np.ndarray:
        """The camera id of every entry (int64; -1 where none was given)."""
        return np.concatenate(self._cameras) if self._cameras else np.empty(0, np.int64)

    @property
    def paths(self) -> list[str]:
        """The path of every entry (``""`` where none was given)."""
        return list(self._paths)

    def add(
        self,
        embeddings: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | Sequence[int] | None = None,
        paths: Sequence[str] | None = None,
        cameras: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    ) -> None:
        """Append N embeddings (N x dim) with optional integer labels, paths and camera ids (N each)."""
        e = check_embeddings(embeddings, "embeddings")
        if e.shape[1] != self.dim:
            raise ValueError(f"embeddings are {e.shape[1]}-d but the index holds {self.dim}-d embeddings")
        n = e.shape[0]
        lab = _optional_ints(labels, n, "labels")
        cams = _optional_ints(cameras, n, "cameras")
        if paths is not None:
            paths = [str(p) for p in paths]
            if len(paths) != n:
                raise ValueError(f"paths has {len(paths)} entries but embeddings has {n} rows")
            self._has_paths = True
        vectors = prepare_vectors(e, self.metric)
        if self._segments and self._segments[-1].shape[0] < MIN_SEGMENT_ROWS:
            self._segments[-1] = torch.cat([self._segments[-1], vectors])
        else:
            self._segments.append(vectors)
        self._labels.append(lab)
        self._cameras.append(cams)
        self._paths.extend(paths if paths is not None else [""] * n)

    def search(self, queries: torch.Tensor | np.ndarray, k: int = 10) -> SearchResult:
        """The ``k`` nearest entries of each query (Q x dim), nearest first (equal distances: lower
        index first, on the torch backend). An index with fewer than ``k`` entries returns all of them
        (``min(k, len(self))`` columns, no padding)."""
        k = check_k(k)
        if len(self) == 0:
            raise ValueError("the index is empty: add embeddings before searching")
        q = check_embeddings(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries are {q.shape[1]}-d but the index holds {self.dim}-d embeddings")
        q = prepare_vectors(q, self.metric)
        kk = min(k, len(self))
        if self.backend == "torch":
            dist, idx = exact_search(q, self._segments, kk, self.metric)
            dist, idx = dist.numpy(), idx.numpy()
        else:
            dist, idx = self._faiss_search(q.numpy(), kk)
        return self._result(dist.astype(np.float32), idx.astype(np.int64))

    def _result(self, dist: np.ndarray, idx: np.ndarray) -> SearchResult:
        missing = idx < 0
        safe = np.where(missing, 0, idx)
        labels = np.where(missing, -1, self.labels[safe])
        paths = None
        if self._has_paths:
            all_paths = np.array([*self._paths, ""], dtype=object)
            paths = all_paths[np.where(missing, len(self._paths), idx)]
        return SearchResult(dist, idx, labels, paths)

    # faiss ---------------------------------------------------------------------------------------
    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _import_faiss(self.backend)
        if self._faiss is None:
            self._faiss = self._build_faiss(faiss)
        if self._faiss_count < len(self):
            self._faiss.add(np.ascontiguousarray(self.vectors[self._faiss_count :].numpy()))
            self._faiss_count = len(self)
        if self.backend == "faiss-ivf":
            self._faiss.nprobe = self.params["nprobe"]
        elif self.backend == "faiss-hnsw":
            self._faiss.hnsw.efSearch = max(self.params["ef_search"], k)
        scores, idx = self._faiss.search(np.ascontiguousarray(queries), k)
        if self.metric == "cosine":
            dist = np.maximum(1.0 - scores, 0.0)  # cos of unit rows may round past 1
        elif self.metric == "dot":
            dist = -scores
        elif self.metric == "euclidean":
            dist = np.sqrt(np.maximum(scores, 1e-12))
        else:
            dist = scores
        return np.where(idx < 0, np.inf, dist), idx

    def _build_faiss(self, faiss):
        inner = self.metric in ("cosine", "dot")
        faiss_metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
        if self.backend == "faiss-flat":
            return faiss.IndexFlatIP(self.dim) if inner else faiss.IndexFlatL2(self.dim)
        if self.backend == "faiss-hnsw":
            return faiss.IndexHNSWFlat(self.dim, self.params["hnsw_m"], faiss_metric)
        n = len(self)
        nlist = self.params["nlist"] or max(1, min(n // 39, int(4 * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(self.dim) if inner else faiss.IndexFlatL2(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, int(nlist), faiss_metric)
        index.train(np.ascontiguousarray(self.vectors.numpy()))
        self.params["nlist"] = int(nlist)
        return index

    # persistence ---------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write the index to ``directory/index.npz`` atomically (temporary file, then rename).

        A trained faiss structure (IVF, HNSW) is stored too, so loading does not rebuild it.
        """
        header = {
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "backend": self.backend,
            "params": self.params,
            "size": len(self),
            "has_paths": self._has_paths,
            "class_names": {str(k): v for k, v in self.class_names.items()},
        }
        arrays = {
            "vectors": self.vectors.numpy(),
            "labels": self.labels,
            "cameras": self.cameras,
            "paths": np.array(self._paths, dtype=str) if self._has_paths else np.empty(0, dtype=str),
        }
        if self._faiss is not None and self.backend in ("faiss-ivf", "faiss-hnsw"):
            faiss = _import_faiss(self.backend)
            if self._faiss_count < len(self):
                self._faiss.add(np.ascontiguousarray(self.vectors[self._faiss_count :].numpy()))
                self._faiss_count = len(self)
            arrays["faiss"] = faiss.serialize_index(self._faiss)
        save_arrays(directory, header, arrays)

    @classmethod
    def load(cls, directory: str | os.PathLike, dim: int | None = None) -> EmbeddingIndex:
        """Read an index saved by :meth:`save`; ``dim``, when given, must match the stored dimension."""
        header, arrays = load_arrays(directory)
        if header.get("kind") != cls.kind:
            raise ValueError(
                f"index at {directory} is a {header.get('kind')!r} index, not {cls.kind!r}: use load_index"
            )
        stored_dim = check_dimension(directory, header, arrays["vectors"], dim)
        check_rows(directory, arrays, ("labels", "cameras", "paths"))
        params = dict(header.get("params", {}))
        index = cls(stored_dim, header["metric"], header["backend"], **params)
        if arrays["vectors"].shape[0]:
            index._segments = [torch.from_numpy(np.ascontiguousarray(arrays["vectors"], dtype=np.float32))]
            index._labels = [arrays["labels"].astype(np.int64)]
            index._cameras = [arrays["cameras"].astype(np.int64)]
            index._has_paths = bool(header.get("has_paths"))
            index._paths = [str(p) for p in arrays["paths"]] if index._has_paths else [""] * len(index)
        index.class_names = {int(k): str(v) for k, v in header.get("class_names", {}).items()}
        if "faiss" in arrays:
            faiss = _import_faiss(index.backend)
            index._faiss = faiss.deserialize_index(arrays["faiss"])
            index._faiss_count = index._faiss.ntotal
        return index


def _optional_ints(values, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, -1, dtype=np.int64)
    return (
        check_labels(
            as_tensor(np.asarray(values) if isinstance(values, list | tuple) else values, name), n, name, "embeddings"
        )
        .cpu()
        .numpy()
    )


def _import_faiss(backend: str):
    try:
        import faiss
    except ImportError as exc:
        raise ValueError(f"backend {backend!r} needs faiss: pip install faiss-cpu (or use backend='torch')") from exc
    return faiss
