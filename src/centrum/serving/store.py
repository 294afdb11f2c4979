"""The service's index: per-image and per-class search, class names, ids, and durable writes.

:class:`IndexStore` is the one interface the service reaches the index through. Its searches run on the
built-in exact index, or (``engines=``) on an image index and a centroid store of the backend interface
(:mod:`centrum.retrieval.backends`, e.g. Qdrant), mirrored from the journalled state at start and on every
write. It wraps :class:`~centrum.retrieval.EmbeddingIndex` (one row per image) and
:class:`~centrum.retrieval.CentroidIndex` (one running-mean centroid per class) and keeps the class name <->
label table and the image ids itself.

Durability: every write is appended to ``journal.log`` (one JSON line, fsynced) *before* it is applied in memory
and acknowledged, so an acknowledged write survives ``kill -9``. At start the snapshot ``snapshot.npz`` is loaded
and the journal's newer records are replayed (a torn last line, from a crash mid-append of a write that was never
acknowledged, is dropped). Compaction writes a new snapshot atomically (temporary file, fsync, rename: a crash
mid-snapshot leaves the previous one) and only then empties the journal; records the snapshot already holds are
recognised by their sequence number and skipped, so a crash between the two steps loses nothing.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from centrum.io import atomic_write_bytes, save_npz
from centrum.retrieval import CentroidIndex, EmbeddingIndex

SNAPSHOT_FILE = "snapshot.npz"
JOURNAL_FILE = "journal.log"
IMAGES_DIR = "images"
STORE_FORMAT = "centrum-serve-store-v1"
MAX_CLASS_NAME = 128


class NotFoundError(LookupError):
    """An unknown class name or image id (the service answers 404)."""


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers, so writes are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def check_class_name(name: str) -> str:
    """A class name as stored: stripped, 1-128 printable characters (``ValueError`` otherwise)."""
    clean = str(name).strip()
    if not clean or len(clean) > MAX_CLASS_NAME or not clean.isprintable() or "/" in clean:
        raise ValueError(f"class name must be 1-{MAX_CLASS_NAME} printable characters without '/', got {name!r}")
    return clean


@dataclass
class SearchResultView:
    """The labels and distances of a search engine's centroid hits, as :meth:`IndexStore.search_classes` reads."""

    labels: np.ndarray
    distances: np.ndarray


@dataclass
class ImageHit:
    """One per-image search result: the image's id, class, distance and stored path."""

    id: int
    class_name: str
    distance: float
    path: str


@dataclass
class ClassHit:
    """One centroid search result: the class, its distance, image count and one of its images' ids."""

    class_name: str
    distance: float
    count: int
    example_id: int | None


class IndexStore:
    """The durable index of one service folder: images with ids and class names, and class centroids.

    ``folder`` holds ``snapshot.npz``, ``journal.log`` and ``images/`` (uploaded images). A folder holding only
    an ``index.npz`` from ``centrum index build`` is imported (class names = the labels as text; ids = rows).
    ``dim``/``metric`` are the model's; a folder written with another dimension is refused. The journal is
    compacted into the snapshot every ``compact_every`` records and at :meth:`close`.
    Methods are thread-safe: searches run concurrently, writes one at a time.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        dim: int,
        metric: str = "cosine",
        compact_every: int = 1000,
        engines: tuple | None = None,
    ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"index folder {self.folder} exists and is not a directory")
        (self.folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        self.dim, self.metric = int(dim), metric
        self.compact_every = max(1, int(compact_every))
        self.lock = ReadWriteLock()
        self._images = EmbeddingIndex(self.dim, metric)
        self._centroids = CentroidIndex(self.dim, metric)
        self._ids: list[int] = []  # image id of each row of self._images
        self._paths: list[str] = []  # stored path of each row (kept here: the index would copy them per search)
        self._row_of: dict[int, int] = {}
        self._label_of: dict[str, int] = {}
        self._name_of: dict[int, str] = {}
        self._ids_of: dict[str, list[int]] = {}
        self._next_id = 0
        self._next_label = 0
        self._seq = 0  # sequence number of the last applied write
        self._snapshot_seq = 0
        # optional search engines behind the backend interface (e.g. Qdrant): an ImageIndex keyed by image id and
        # a CentroidStore, both empty at start and mirrored from the journalled state, which stays the truth
        self._engine, self._centroid_engine = engines if engines is not None else (None, None)
        for engine in (self._engine, self._centroid_engine):
            if engine is not None and (len(engine) or engine.dim != self.dim or engine.metric != metric):
                raise ValueError(f"search engine {engine!r} must be empty, {self.dim}-d and {metric}")
        self._load()
        self._journal = open(self.folder / JOURNAL_FILE, "ab")  # noqa: SIM115 - kept open for appends

    # ---------------------------------------------------------------- reads
    @property
    def num_images(self) -> int:
        """Number of images in the index."""
        return len(self._ids)

    @property
    def num_classes(self) -> int:
        """Number of classes (with at least one image)."""
        return len(self._ids_of)

    def classes(self) -> dict[str, int]:
        """Every class name with its number of images, sorted by name."""
        with self.lock.read():
            return {name: len(self._ids_of[name]) for name in sorted(self._ids_of)}

    def image_path(self, image_id: int) -> Path:
        """The file of image ``image_id`` (relative paths resolved against the folder, then the cwd)."""
        with self.lock.read():
            row = self._row_of.get(int(image_id))
            if row is None:
                raise NotFoundError(f"image id {image_id} is not in the index")
            stored = self._paths[row]
        path = Path(stored)
        if not stored:
            raise NotFoundError(f"image id {image_id} has no stored file")
        if not path.is_absolute() and (self.folder / path).exists():
            return self.folder / path
        return path

    def search_images(self, queries: np.ndarray, k: int) -> list[list[ImageHit]]:
        """The ``k`` nearest images of each query embedding (fewer when the index holds fewer)."""
        with self.lock.read():
            if not self._ids:
                return [[] for _ in range(len(queries))]
            if self._engine is not None:
                return self._engine_image_hits(queries, k)
            result = self._images.search(queries, k)
            out = []
            for q in range(len(queries)):
                hits = []
                for row, label, dist in zip(result.indices[q], result.labels[q], result.distances[q], strict=True):
                    if row < 0:
                        break
                    hits.append(ImageHit(self._ids[row], self._name_of[int(label)], float(dist), self._paths[row]))
                out.append(hits)
            return out

    def search_classes(self, queries: np.ndarray, k: int) -> list[list[ClassHit]]:
        """The ``k`` nearest class centroids of each query embedding."""
        with self.lock.read():
            if not len(self._centroids):
                return [[] for _ in range(len(queries))]
            if self._centroid_engine is not None:
                hits = self._centroid_engine.search(np.asarray(queries, dtype=np.float32), min(k, len(self._centroids)))
                result = SearchResultView(labels=hits.labels, distances=hits.distances)
            else:
                result = self._centroids.search(queries, k)
            out = []
            for q in range(len(queries)):
                hits = []
                for label, dist in zip(result.labels[q], result.distances[q], strict=True):
                    if label < 0:
                        break
                    name = self._name_of[int(label)]
                    ids = self._ids_of[name]
                    hits.append(ClassHit(name, float(dist), len(ids), ids[0] if ids else None))
                out.append(hits)
            return out

    def _engine_image_hits(self, queries: np.ndarray, k: int) -> list[list[ImageHit]]:
        hits = self._engine.search(np.asarray(queries, dtype=np.float32), min(k, len(self._ids)))
        out = []
        for q in range(len(queries)):
            row_hits = []
            for image_id, dist in zip(hits.ids[q], hits.distances[q], strict=True):
                if image_id < 0:
                    break
                row = self._row_of[int(image_id)]
                label = int(self._images.labels[row])
                row_hits.append(ImageHit(int(image_id), self._name_of[label], float(dist), self._paths[row]))
            out.append(row_hits)
        return out

    # ---------------------------------------------------------------- writes
    def enrol(
        self,
        class_name: str,
        vectors: np.ndarray,
        images: Sequence[tuple[bytes, str]] | None = None,
        paths: Sequence[str] | None = None,
    ) -> list[int]:
        """Add ``vectors`` (N x dim) to class ``class_name`` (created if new); return their new ids.

        ``images`` (bytes, file suffix) are stored under ``images/`` and become the entries' paths; otherwise
        ``paths`` are stored as given. Durable (journalled and fsynced) when this returns.
        """
        name = check_class_name(class_name)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or not len(vectors):
            raise ValueError(f"expected N x {self.dim} embeddings, got shape {vectors.shape}")
        with self.lock.write():
            ids = list(range(self._next_id, self._next_id + len(vectors)))
            if images is not None:
                stored = []
                for image_id, (data, suffix) in zip(ids, images, strict=True):
                    relative = f"{IMAGES_DIR}/{image_id}{suffix}"
                    atomic_write_bytes(self.folder / relative, data)
                    stored.append(relative)
                paths = stored
            paths = [str(p) for p in paths] if paths is not None else [""] * len(ids)
            record = {
                "op": "enrol",
                "class": name,
                "ids": ids,
                "paths": paths,
                "vectors": base64.b64encode(vectors.tobytes()).decode(),
            }
            self._write(record)
            return ids

    def delete_image(self, image_id: int) -> None:
        """Remove image ``image_id`` (its class's centroid is recomputed; an emptied class disappears)."""
        with self.lock.write():
            if int(image_id) not in self._row_of:
                raise NotFoundError(f"image id {image_id} is not in the index")
            self._write({"op": "delete_image", "id": int(image_id)})

    def delete_class(self, class_name: str) -> int:
        """Remove class ``class_name`` and all its images; return how many images went."""
        with self.lock.write():
            if class_name not in self._ids_of:
                raise NotFoundError(f"class {class_name!r} is not in the index")
            count = len(self._ids_of[class_name])
            self._write({"op": "delete_class", "class": class_name})
            return count

    def compact(self) -> None:
        """Write the snapshot (atomically) and empty the journal."""
        with self.lock.write():
            self._compact()

    def close(self) -> None:
        """Compact and close the journal."""
        with self.lock.write():
            if self._seq != self._snapshot_seq:
                self._compact()
            self._journal.close()
            for engine in (self._engine, self._centroid_engine):
                if engine is not None and hasattr(engine, "close"):
                    engine.close()  # a local Qdrant folder admits one client at a time

    # ---------------------------------------------------------------- internals
    def _write(self, record: dict) -> None:
        """Journal ``record`` durably, then apply it; compact when the journal is long. Caller holds the lock."""
        record = {"seq": self._seq + 1, **record}
        self._journal.write((json.dumps(record) + "\n").encode())
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._apply(record)
        if self._seq - self._snapshot_seq >= self.compact_every:
            self._compact()

    def _apply(self, record: dict) -> None:
        op = record["op"]
        if op == "enrol":
            vectors = np.frombuffer(base64.b64decode(record["vectors"]), dtype=np.float32).reshape(-1, self.dim).copy()
            self._add(record["class"], vectors, [int(i) for i in record["ids"]], record["paths"])
        elif op == "delete_image":
            self._remove_ids({int(record["id"])})
        elif op == "delete_class":
            self._remove_ids(set(self._ids_of.get(record["class"], [])))
        else:
            raise ValueError(f"unknown journal operation {op!r}")
        self._seq = int(record["seq"])

    def _add(self, name: str, vectors: np.ndarray, ids: list[int], paths: Sequence[str]) -> None:
        if name not in self._label_of:
            self._label_of[name] = self._next_label
            self._name_of[self._next_label] = name
            self._next_label += 1
            self._ids_of[name] = []
        label = self._label_of[name]
        labels = np.full(len(ids), label, np.int64)
        start = len(self._ids)
        self._images.add(vectors, labels)
        self._centroids.add(vectors, labels)
        self._mirror_add(vectors, labels, ids, paths)
        self._paths.extend(str(p) for p in paths)
        for offset, image_id in enumerate(ids):
            self._row_of[image_id] = start + offset
        self._ids.extend(ids)
        self._ids_of[name].extend(ids)
        self._next_id = max(self._next_id, max(ids) + 1)

    def _add_rows(self, vectors: np.ndarray, labels: np.ndarray, ids: list[int], paths: list[str]) -> None:
        """Add rows of known labels in one call (loading a snapshot): one index segment, order kept."""
        self._images.add(vectors, labels)
        self._centroids.add(vectors, labels)
        self._mirror_add(vectors, labels, ids, paths)
        start = len(self._ids)
        self._ids.extend(int(i) for i in ids)
        self._paths.extend(str(p) for p in paths)
        for offset, (image_id, label) in enumerate(zip(ids, labels.tolist(), strict=True)):
            self._row_of[int(image_id)] = start + offset
            self._ids_of[self._name_of[label]].append(int(image_id))
        self._next_id = max(self._next_id, max(ids) + 1)

    def _mirror_add(self, vectors: np.ndarray, labels: np.ndarray, ids: Sequence[int], paths: Sequence[str]) -> None:
        """Apply an addition to the search engines too (when the store has them)."""
        if self._engine is not None:
            self._engine.add(vectors, labels, [str(p) for p in paths], ids=np.asarray(ids, dtype=np.int64))
        if self._centroid_engine is not None:
            self._centroid_engine.add(vectors, labels)

    def _remove_ids(self, doomed: set[int]) -> None:
        """Drop the rows of ``doomed`` ids: rebuild the image index, recompute the affected centroids."""
        if not doomed:
            return
        keep = np.array([i not in doomed for i in self._ids], dtype=bool)
        vectors, labels = self._images.vectors.numpy(), self._images.labels
        paths = self._paths
        affected = {int(v) for v in labels[~keep]}
        for image_id, row in list(self._row_of.items()):
            if image_id in doomed:
                path = paths[row]
                if path.startswith(f"{IMAGES_DIR}/"):
                    (self.folder / path).unlink(missing_ok=True)
        rebuilt = EmbeddingIndex(self.dim, self.metric)
        if keep.any():
            rebuilt.add(vectors[keep], labels[keep])
        self._images = rebuilt
        self._paths = [p for p, k in zip(paths, keep, strict=True) if k]
        self._ids = [i for i, k in zip(self._ids, keep, strict=True) if k]
        self._row_of = {image_id: row for row, image_id in enumerate(self._ids)}
        if self._engine is not None:
            self._engine.remove(np.fromiter(doomed, np.int64, len(doomed)))
        for label in affected:
            name = self._name_of[label]
            self._ids_of[name] = [i for i in self._ids_of[name] if i not in doomed]
            self._centroids.remove(label)
            if self._centroid_engine is not None:
                self._centroid_engine.remove_class(label)
            rows = labels[keep] == label
            if rows.any():
                self._centroids.add(vectors[keep][rows], labels[keep][rows])
                if self._centroid_engine is not None:
                    self._centroid_engine.add(vectors[keep][rows], labels[keep][rows])
            else:  # an emptied class is gone; its label is not reused
                del self._ids_of[name], self._label_of[name], self._name_of[label]

    def _compact(self) -> None:
        header = {
            "format": STORE_FORMAT,
            "dim": self.dim,
            "metric": self.metric,
            "seq": self._seq,
            "next_id": self._next_id,
            "next_label": self._next_label,
            "classes": {name: label for name, label in self._label_of.items()},
        }
        save_npz(
            self.folder / SNAPSHOT_FILE,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            vectors=self._images.vectors.numpy(),
            labels=self._images.labels,
            ids=np.asarray(self._ids, dtype=np.int64),
            paths=np.asarray(self._paths, dtype=str),
        )
        self._snapshot_seq = self._seq
        self._journal.truncate(0)
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def _load(self) -> None:
        snapshot = self.folder / SNAPSHOT_FILE
        if snapshot.is_file():
            try:
                with np.load(snapshot, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
                header = json.loads(arrays.pop("header").tobytes().decode())
            except (ValueError, KeyError, OSError) as exc:
                raise ValueError(f"{snapshot} is not a readable centrum service snapshot: {exc}") from exc
            if header.get("format") != STORE_FORMAT:
                raise ValueError(f"{snapshot} is not a centrum service snapshot (format {header.get('format')!r})")
            if int(header["dim"]) != self.dim:
                raise ValueError(
                    f"index folder {self.folder} holds {header['dim']}-d embeddings but the model gives {self.dim}-d"
                )
            self._label_of = {str(k): int(v) for k, v in header["classes"].items()}
            self._name_of = {v: k for k, v in self._label_of.items()}
            self._ids_of = {name: [] for name in self._label_of}
            self._next_label = int(header["next_label"])
            if len(arrays["ids"]):
                self._add_rows(
                    arrays["vectors"],
                    arrays["labels"].astype(np.int64),
                    arrays["ids"].tolist(),
                    arrays["paths"].tolist(),
                )
            self._ids_of = {name: ids for name, ids in self._ids_of.items() if ids}
            self._next_id = int(header["next_id"])
            self._seq = self._snapshot_seq = int(header["seq"])
        elif (self.folder / "index.npz").is_file():
            self._import_built_index()
        self._replay()

    def _import_built_index(self) -> None:
        """Take over an index written by ``centrum index build`` (per-image, with labels and paths)."""
        from centrum.retrieval import load_index

        built = load_index(self.folder)
        if not isinstance(built, EmbeddingIndex):
            raise ValueError(f"{self.folder}/index.npz is a centroid index; the service needs a per-image index")
        if built.dim != self.dim:
            raise ValueError(f"index {self.folder} holds {built.dim}-d embeddings but the model gives {self.dim}-d")
        vectors, labels, paths = built.vectors.numpy(), built.labels, built.paths
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            self._add(
                str(int(label)) if label >= 0 else "unlabelled", vectors[rows], rows.tolist(), [paths[r] for r in rows]
            )

    def _replay(self) -> None:
        journal = self.folder / JOURNAL_FILE
        if not journal.is_file():
            return
        good = 0
        with open(journal, "rb") as handle:
            for line in handle:
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("torn last line")
                    record = json.loads(line)
                except ValueError:
                    break  # a write cut short by a crash was never acknowledged: drop it and what follows
                if int(record["seq"]) > self._seq:
                    self._apply(record)
                good += len(line)
        if good != journal.stat().st_size:
            with open(journal, "r+b") as handle:
                handle.truncate(good)
                handle.flush()
                os.fsync(handle.fileno())
