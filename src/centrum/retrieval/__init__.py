"""Persistent indices for retrieval: per-image (:class:`EmbeddingIndex`, torch or faiss) and per-class
(:class:`CentroidIndex`, running means); :func:`load_index` reads either from its directory."""

from __future__ import annotations

import os

from centrum.retrieval._storage import FORMAT_VERSION, load_arrays
from centrum.retrieval.centroid import CentroidIndex
from centrum.retrieval.index import BACKENDS, EmbeddingIndex, SearchResult


def load_index(directory: str | os.PathLike, dim: int | None = None) -> EmbeddingIndex | CentroidIndex:
    """Load whichever kind of index was saved in ``directory`` (``dim``, when given, is checked)."""
    header, _ = load_arrays(directory)
    kinds = {EmbeddingIndex.kind: EmbeddingIndex, CentroidIndex.kind: CentroidIndex}
    kind = header.get("kind")
    if kind not in kinds:
        raise ValueError(f"index at {directory} has unknown kind {kind!r}; expected one of {', '.join(kinds)}")
    return kinds[kind].load(directory, dim)


__all__ = ["BACKENDS", "FORMAT_VERSION", "CentroidIndex", "EmbeddingIndex", "SearchResult", "load_index"]
