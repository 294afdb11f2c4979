"""Persistent indices for retrieval: per-image (:class:`EmbeddingIndex`, torch or faiss) and per-class
(:class:`CentroidIndex`, running means); :func:`load_index` opens any index folder ``centrum index build``
writes, on any backend (the built-in ``index.npz``, or a torch/faiss/Qdrant backend index)."""

from __future__ import annotations

import os

from centrum.retrieval._storage import FORMAT_VERSION
from centrum.retrieval.centroid import CentroidIndex
from centrum.retrieval.folder import BackendIndex, is_index_folder, open_index_folder
from centrum.retrieval.index import BACKENDS, EmbeddingIndex, SearchResult


def load_index(directory: str | os.PathLike, dim: int | None = None) -> EmbeddingIndex | CentroidIndex | BackendIndex:
    """Open whichever index was saved in ``directory`` (``dim``, when given, is checked): the built-in
    format or a backend index; see :func:`centrum.retrieval.folder.open_index_folder`. Call ``close()`` on
    the result when done (it releases a local Qdrant folder)."""
    return open_index_folder(directory, dim)


__all__ = [
    "BACKENDS",
    "FORMAT_VERSION",
    "BackendIndex",
    "CentroidIndex",
    "EmbeddingIndex",
    "SearchResult",
    "is_index_folder",
    "load_index",
    "open_index_folder",
]
