"""Index backends behind one interface: a per-image index (:class:`ImageIndex`) and a class-centroid index
(:class:`CentroidStore`), on the built-in exact torch index (default: embedded, what the exact evaluation
protocols use), faiss (``faiss-flat`` exact; ``faiss-ivfpq`` and ``faiss-hnsw`` approximate, for large
galleries) or Qdrant (``qdrant``: a local folder, or a server/cluster by ``url=``).

Open one with :func:`open_backend`, reopen a saved one with :func:`load_backend`::

    index = open_backend("faiss-hnsw", dim=512)                      # per-image
    ids = index.add(embeddings, labels, paths=paths, cameras=cameras)
    hits = index.search(queries, k=10, query_labels=ql, query_cameras=qc)  # re-id rule on
    index.save("gallery/")
    centroids = open_backend("qdrant", dim=512, kind="centroid", url="http://localhost:6333")
"""

from __future__ import annotations

import os

from centrum.retrieval.backends.base import METRICS, CentroidStore, ImageIndex, SearchHits
from centrum.retrieval.backends.exact import TorchCentroidStore, TorchImageIndex
from centrum.retrieval.backends.faiss_backend import FaissCentroidStore, FaissImageIndex
from centrum.retrieval.backends.qdrant_backend import QdrantCentroidStore, QdrantImageIndex
from centrum.retrieval.backends.store import read_header

BACKEND_NAMES: tuple[str, ...] = ("torch", "faiss-flat", "faiss-ivfpq", "faiss-hnsw", "qdrant")
EXACT_BACKENDS: tuple[str, ...] = ("torch", "faiss-flat", "qdrant")  # qdrant: local mode, or exact=True
KINDS: tuple[str, ...] = ("image", "centroid")


def open_backend(
    name: str, dim: int, *, kind: str = "image", metric: str = "cosine", **options
) -> ImageIndex | CentroidStore:
    """A new (or, for Qdrant, an existing) index of ``kind`` ``"image"`` or ``"centroid"`` on backend
    ``name`` (one of :data:`BACKEND_NAMES`), for ``dim``-d embeddings compared by ``metric``
    (``cosine``, ``euclidean`` or ``dot``).

    ``options`` by backend: faiss-ivfpq ``nlist``, ``nprobe``, ``pq_m``, ``pq_bits``, ``train_size``;
    faiss-hnsw ``hnsw_m``, ``ef_construction``, ``ef_search``; qdrant ``path`` (local folder) or ``url`` and
    ``api_key`` (server) or ``location``, ``collection`` (default ``centrum_images`` / ``centrum_centroids``),
    and for images ``exact``, ``hnsw_ef``; ``create=False`` reopens an existing Qdrant collection (a missing
    folder or collection is then an error, not a new empty index).
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown index backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(dim, bool) or int(dim) != dim or int(dim) < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    image = kind == "image"
    if name == "torch":
        if options:
            raise ValueError(f"the torch backend takes no options, got {', '.join(sorted(options))}")
        return TorchImageIndex(dim, metric) if image else TorchCentroidStore(dim, metric)
    if name.startswith("faiss-"):
        index_kind = name.removeprefix("faiss-")
        cls = FaissImageIndex if image else FaissCentroidStore
        return cls(dim, metric, index_kind, **options)
    return (QdrantImageIndex if image else QdrantCentroidStore)(dim, metric, **options)


def load_backend(directory: str | os.PathLike) -> ImageIndex | CentroidStore:
    """Reopen an index saved by a torch or faiss backend's ``save(directory)`` (Qdrant persists by
    itself: reopen it with :func:`open_backend` and the same ``path``/``url`` and ``collection``)."""
    header = read_header(directory)
    classes = {
        ("torch", "image"): TorchImageIndex,
        ("torch", "centroid"): TorchCentroidStore,
        ("faiss", "image"): FaissImageIndex,
        ("faiss", "centroid"): FaissCentroidStore,
    }
    key = (header.get("backend"), header.get("kind"))
    if key not in classes:
        raise ValueError(f"index at {directory} has unknown backend/kind {key}")
    return classes[key].load(directory)


__all__ = [
    "BACKEND_NAMES",
    "EXACT_BACKENDS",
    "KINDS",
    "METRICS",
    "CentroidStore",
    "FaissCentroidStore",
    "FaissImageIndex",
    "ImageIndex",
    "QdrantCentroidStore",
    "QdrantImageIndex",
    "SearchHits",
    "TorchCentroidStore",
    "TorchImageIndex",
    "load_backend",
    "open_backend",
]
