"""Index folders: the one function that opens whatever ``centrum index build`` wrote, on any backend, and the
checks that keep ``index build`` from replacing an index it was not asked to replace.

Two layouts share one kind of folder:

* the built-in format: ``index.npz`` (an :class:`~centrum.retrieval.EmbeddingIndex` on torch or faiss, or a
  :class:`~centrum.retrieval.CentroidIndex`), which ``centrum serve`` can also take over;
* a backend index: ``centrum_index.json`` (backend, kind, dimension, metric, class names, entry count and,
  for Qdrant, where the points live) beside the backend's own files (``backend.json``/``backend.npz`` for
  torch and faiss; nothing for Qdrant, whose points live in its own folder or server).

:func:`open_index_folder` reads both and gives one interface: ``dim``, ``metric``, ``kind`` (``"embedding"``
for one entry per image, ``"centroid"`` for one per class), ``class_names``, ``has_paths``, ``search(queries,
k)`` returning a :class:`~centrum.retrieval.SearchResult`, and ``close()`` (which releases a local Qdrant
folder: Qdrant's local mode admits one process at a time).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from centrum.retrieval._storage import INDEX_FILE
from centrum.retrieval.centroid import CentroidIndex
from centrum.retrieval.index import EmbeddingIndex, SearchResult, check_k

INDEX_INFO_FILE = "centrum_index.json"  # written by a backend build: backend, kind, class names, where Qdrant is
BACKEND_HEADER_FILE = "backend.json"
INDEX_MARKERS: tuple[str, ...] = (INDEX_FILE, INDEX_INFO_FILE, BACKEND_HEADER_FILE)


def is_index_folder(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds an index written by ``centrum index build`` (either layout)."""
    folder = pathlib.Path(directory)
    return folder.is_dir() and any((folder / name).is_file() for name in INDEX_MARKERS)


class BackendIndex:
    """A saved backend index (``centrum_index.json``), opened for searching: its engine (torch, faiss or Qdrant,
    see :mod:`centrum.retrieval.backends`), class names, and :meth:`search` in the built-in format's result.

    A Qdrant index is reopened, never created: a Qdrant folder that was deleted, a collection that is gone, or
    one holding a different number of entries than the build recorded is a one-line error naming it.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        from centrum.retrieval.backends import load_backend, open_backend
        from centrum.retrieval.backends.qdrant_backend import qdrant_errors

        self.directory = pathlib.Path(directory)
        info_file = self.directory / INDEX_INFO_FILE
        try:
            info = json.loads(info_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{info_file} is damaged: it is not valid JSON ({exc})") from exc
        if not isinstance(info, dict) or info.get("kind") not in ("image", "centroid") or "dim" not in info:
            raise ValueError(f"{info_file} is damaged: it does not describe an index (backend, kind, dim)")
        self.info = info
        self.class_names = {int(k): str(v) for k, v in (info.get("class_names") or {}).items()}
        self.kind = "centroid" if info["kind"] == "centroid" else EmbeddingIndex.kind
        if info.get("backend") == "qdrant":
            where = info.get("qdrant") or {}
            options: dict = {"collection": where.get("collection"), "create": False}
            if where.get("path"):
                options["path"] = where["path"]
            else:
                options["url"] = where.get("url")
                if where.get("api_key_file"):
                    key_file = pathlib.Path(where["api_key_file"])
                    if not key_file.is_file():
                        raise FileNotFoundError(f"the Qdrant API key file {key_file} named in {info_file} is missing")
                    options["api_key"] = key_file.read_text().strip()
            self.where = options.get("url") or options.get("path") or ""
            try:
                with qdrant_errors(self.where):
                    self.engine = open_backend(
                        "qdrant", int(info["dim"]), kind=info["kind"], metric=info.get("metric", "cosine"), **options
                    )
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"the index at {self.directory} keeps its entries in Qdrant: {exc}") from None
            self._check_size()
        else:
            self.where = str(self.directory)
            self.engine = load_backend(self.directory)
        self.dim = int(self.engine.dim)
        self.metric = str(self.engine.metric)

    def _check_size(self) -> None:
        recorded = self.info.get("size")
        if recorded is None:
            return
        held = len(self.engine)
        if held != int(recorded):
            self.close()
            raise ValueError(
                f"qdrant collection {self.engine.collection!r} at {self.where} holds {held} entries, but the index "
                f"at {self.directory} was built with {recorded}: the Qdrant data changed or a rebuild was cut short "
                "(build it again with centrum index build --overwrite)"
            )

    def __repr__(self) -> str:
        return f"BackendIndex({self.directory}, {self.engine!r})"

    def __len__(self) -> int:
        return len(self.engine)

    @property
    def has_paths(self) -> bool:
        """True when some entry carries an image path (a centroid index never does)."""
        if self.kind == "centroid":
            return False
        if "has_paths" in self.info:
            return bool(self.info["has_paths"])
        return True  # older builds did not record it: let the search's results tell

    def search(self, queries: np.ndarray, k: int = 10) -> SearchResult:
        """The k nearest entries of each query as a :class:`SearchResult`: ``indices`` are entry ids (class
        labels for a centroid index); ``paths`` is ``None`` when no returned entry has one."""
        from centrum.retrieval.backends.qdrant_backend import qdrant_errors

        k = check_k(k)
        if len(self.engine) == 0:
            raise ValueError(f"the index at {self.directory} is empty")
        with qdrant_errors(self.where):
            hits = self.engine.search(np.asarray(queries, dtype=np.float32), min(k, len(self.engine)))
        paths = hits.paths if any(str(p) for p in hits.paths.ravel()) else None
        return SearchResult(hits.distances, hits.ids, hits.labels, paths)

    def entries(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every entry of a per-image index as ``(vectors N x dim float32, labels N, paths N)``, in id order:
        what a service needs to take the index over (for the cosine metric the vectors are L2-normalised, as
        every backend compares them). A ``ValueError`` for a centroid index, and for faiss-ivfpq,
        which keeps compressed codes only."""
        if self.kind == "centroid":
            raise ValueError(f"the index at {self.directory} is a centroid index: it holds no per-image entries")
        engine = self.engine
        if getattr(engine, "backend", "") == "qdrant":
            points = sorted(engine._scroll(with_payload=True, with_vectors=True), key=lambda p: int(p.id))
            vectors = np.array([p.vector for p in points], np.float32).reshape(-1, self.dim)
            labels = np.array([int((p.payload or {}).get("label", -1)) for p in points], np.int64)
            return self._unit(vectors), labels, [str((p.payload or {}).get("path", "")) for p in points]
        meta = engine.meta
        order = np.argsort(meta.ids, kind="stable")
        if engine.backend == "torch":
            vectors = engine.index.vectors.numpy()
        elif getattr(engine, "index_kind", "") in ("flat", "hnsw"):
            vectors = engine.engine.index.reconstruct_batch(meta.ids)
        else:
            raise ValueError(
                f"the index at {self.directory} is a faiss-{engine.index_kind} index, which keeps compressed codes, "
                "not the embeddings: build a torch, faiss-flat or faiss-hnsw index instead"
            )
        vectors = np.asarray(vectors, np.float32)[order]
        return self._unit(vectors), meta.labels[order], [str(p) for p in meta.paths[order]]

    def _unit(self, vectors: np.ndarray) -> np.ndarray:
        if self.metric != "cosine":
            return vectors
        return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def close(self) -> None:
        """Release a local Qdrant folder (other indexes hold nothing)."""
        if hasattr(self.engine, "close"):
            self.engine.close()


def open_index_folder(
    directory: str | os.PathLike, dim: int | None = None
) -> EmbeddingIndex | CentroidIndex | BackendIndex:
    """Open the index ``centrum index build`` wrote in ``directory``, whatever its backend (the one function
    every command that takes an index folder goes through). ``dim``, when given, must match.

    Raises ``FileNotFoundError`` when there is no index there (naming the folder and what it lacks) and a
    one-line ``ValueError`` naming the file at fault for a damaged one, a Qdrant folder that is gone, locked
    by another process or damaged.
    """
    from centrum.retrieval._storage import load_arrays

    folder = pathlib.Path(directory)
    if not folder.exists():
        raise FileNotFoundError(f"no index at {folder}: the folder does not exist")
    if not folder.is_dir():
        raise ValueError(f"no index at {folder}: it is a file, not an index folder")
    if (folder / INDEX_INFO_FILE).is_file():
        index: EmbeddingIndex | CentroidIndex | BackendIndex = BackendIndex(folder)
        if dim is not None and int(dim) != index.dim:
            index.close()
            raise ValueError(f"index at {folder} holds {index.dim}-d embeddings but {dim}-d were expected")
        return index
    if not (folder / INDEX_FILE).is_file():
        if (folder / BACKEND_HEADER_FILE).is_file():
            raise FileNotFoundError(
                f"no index at {folder}: it holds backend files but not {INDEX_INFO_FILE} (a build was cut short, "
                "or the folder was written by a program's index.save(): open it with load_backend)"
            )
        raise FileNotFoundError(
            f"no index at {folder}: {folder / INDEX_FILE} does not exist, nor {INDEX_INFO_FILE} "
            "(build one with centrum index build)"
        )
    header, _ = load_arrays(folder)
    kinds = {EmbeddingIndex.kind: EmbeddingIndex, CentroidIndex.kind: CentroidIndex}
    kind = header.get("kind")
    if kind not in kinds:
        raise ValueError(f"index at {folder} has unknown kind {kind!r}; expected one of {', '.join(kinds)}")
    return kinds[kind].load(folder, dim)


def check_build_target(out: str | os.PathLike, overwrite: bool) -> bool:
    """Whether ``out`` (an ``index build`` destination) holds an index that ``--overwrite`` will replace.

    A missing or empty folder is fine; an index folder is refused unless ``overwrite``; a file, or a folder
    holding anything else, is always refused (``--overwrite`` never deletes files that are not an index).
    """
    folder = pathlib.Path(out)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise ValueError(f"cannot save an index to {folder}: it exists and is not a directory")
    if not any(folder.iterdir()):
        return False
    if not is_index_folder(folder):
        raise ValueError(
            f"--out {folder} is a folder of other files, not an index: choose another --out (nothing was written)"
        )
    if not overwrite:
        raise ValueError(
            f"--out {folder} already holds an index: pass --overwrite to replace it, or choose another --out"
        )
    return True
