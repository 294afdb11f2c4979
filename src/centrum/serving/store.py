"""The service's index: per-image and per-class search, class names, ids, and durable writes.

:class:`IndexStore` is the one interface the service reaches the index through. Its searches run on the
built-in exact index, or (``engines=``) on an image index and a centroid store of the backend interface
(:mod:`centrum.retrieval.backends`, e.g. Qdrant), mirrored from the journalled state at start and on every
write. It wraps :class:`~centrum.retrieval.EmbeddingIndex` (one row per image) and
:class:`~centrum.retrieval.CentroidIndex` (one running-mean centroid per class) and keeps the class name <->
label table and the image ids itself.

Durability: every write is appended to ``journal.log`` (:mod:`centrum.serving.journal`: one checksummed line,
fsynced) *before* it is applied in memory and acknowledged, so an acknowledged write survives ``kill -9``. At
start the snapshot ``snapshot.npz`` (:mod:`centrum.serving.snapshot`) is loaded and the journal's newer records
are replayed. A torn last line (a crash mid-append of a write never acknowledged) is dropped; a damaged record
anywhere else stops the start (:class:`~centrum.serving.journal.JournalDamagedError`) unless ``recover=True``.
Compaction writes a new snapshot atomically and only then empties the journal; records the snapshot already
holds are recognised by their sequence number and skipped, so a crash between the two steps loses nothing.
Image ids are never reused: besides the snapshot's and the journal's, ``id-reserve.json`` holds a high-water
mark, written before any id under it is handed out, that recovery raises the next id to.
A full disk fails the write with :class:`StorageError` (the service answers 507) and leaves no partial record.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from centrum.io import atomic_write_bytes, atomic_write_json
from centrum.retrieval import CentroidIndex, EmbeddingIndex
from centrum.serving.folder_lock import FolderInUseError, FolderLock
from centrum.serving.journal import JOURNAL_FILE, Journal, JournalDamagedError, JournalScan, scan_journal, set_aside
from centrum.serving.locking import ReadWriteLock
from centrum.serving.snapshot import (
    SNAPSHOT_FILE,
    STORE_FORMAT,
    SnapshotDamagedError,
    read_snapshot,
    write_snapshot,
)

__all__ = [
    "IMAGES_DIR",
    "JOURNAL_FILE",
    "SNAPSHOT_FILE",
    "STORE_FORMAT",
    "ClassHit",
    "FolderInUseError",
    "ImageHit",
    "IndexStore",
    "JournalDamagedError",
    "NotFoundError",
    "ReadWriteLock",
    "SnapshotDamagedError",
    "StorageError",
    "check_class_name",
]

IMAGES_DIR = "images"
ID_RESERVE_FILE = "id-reserve.json"
ID_BLOCK = 1024  # ids reserved per write of the high-water mark: one extra fsynced file write per 1024 images
MAX_CLASS_NAME = 128
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)

log = logging.getLogger("centrum.serving")


class NotFoundError(LookupError):
    """An unknown class name or image id (the service answers 404)."""


class StorageError(RuntimeError):
    """A write failed in the file system and was not made (nothing was acknowledged, nothing half-written
    stays). ``full`` is true for a full disk or quota (the service answers 507), false otherwise (500)."""

    def __init__(self, message: str, full: bool) -> None:
        super().__init__(message)
        self.full = full


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` (itself, or its cause: a ``ValueError`` of :func:`centrum.io.atomic_write`)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


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
    an ``index.npz`` from ``centrum index build`` is imported (class names: the names the index stores, else the
    labels as text; ids = rows). ``dim``/``metric`` are the model's; a folder written with another dimension is
    refused. The journal is compacted into the snapshot every ``compact_every`` records and at :meth:`close`.
    A damaged journal record stops the start with :class:`JournalDamagedError` naming file and line;
    ``recover=True`` keeps every intact record, sets the damaged lines aside and compacts.
    Methods are thread-safe: searches run concurrently, writes one at a time. One service process per folder at a
    time: a store opened by a second process raises :class:`~centrum.serving.folder_lock.FolderInUseError`
    (:mod:`centrum.serving.folder_lock`).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        dim: int,
        metric: str = "cosine",
        compact_every: int = 1000,
        engines: tuple | None = None,
        recover: bool = False,
    ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"index folder {self.folder} exists and is not a directory")
        (self.folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        self._folder_lock = FolderLock(self.folder).acquire()  # one service per folder
        try:
            self._open(dim, metric, compact_every, engines, recover)
        except BaseException:
            self._folder_lock.release()
            raise

    def _open(self, dim: int, metric: str, compact_every: int, engines: tuple | None, recover: bool) -> None:
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
        self._next_compaction = self.compact_every  # journal length that triggers one (pushed on after a failure)
        self._reserved_ids = self._read_id_reserve()
        self.recovered: list[str] = []  # what the start repaired, one line each (the CLI prints them)
        # optional search engines behind the backend interface (e.g. Qdrant): an ImageIndex keyed by image id and
        # a CentroidStore, both empty at start and mirrored from the journalled state, which stays the truth
        self._engine, self._centroid_engine = engines if engines is not None else (None, None)
        for engine in (self._engine, self._centroid_engine):
            if engine is not None and (len(engine) or engine.dim != self.dim or engine.metric != metric):
                raise ValueError(f"search engine {engine!r} must be empty, {self.dim}-d and {metric}")
        must_compact = self._load(recover)
        self._journal = Journal(self.folder / JOURNAL_FILE)
        if must_compact:
            self._compact()  # the repaired state becomes the snapshot; the journal starts empty

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
        ``paths`` are stored as given. Durable (journalled and fsynced) when this returns; a file-system failure
        raises :class:`StorageError` and leaves neither a record nor a stored image behind.
        """
        name = check_class_name(class_name)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or not len(vectors):
            raise ValueError(f"expected N x {self.dim} embeddings, got shape {vectors.shape}")
        with self.lock.write():
            ids = list(range(self._next_id, self._next_id + len(vectors)))
            written: list[Path] = []
            try:
                self._reserve_ids(ids[-1] + 1)
                if images is not None:
                    stored = []
                    for image_id, (data, suffix) in zip(ids, images, strict=True):
                        relative = f"{IMAGES_DIR}/{image_id}{suffix}"
                        atomic_write_bytes(self.folder / relative, data)
                        written.append(self.folder / relative)
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
            except (OSError, ValueError) as exc:
                for path in written:  # the enrolment was not made: its stored images go too
                    path.unlink(missing_ok=True)
                self._raise_storage_error(exc, f"enrolment into {name!r}")
            return ids

    def delete_image(self, image_id: int) -> None:
        """Remove image ``image_id`` (its class's centroid is recomputed; an emptied class disappears)."""
        with self.lock.write():
            if int(image_id) not in self._row_of:
                raise NotFoundError(f"image id {image_id} is not in the index")
            self._write_or_fail({"op": "delete_image", "id": int(image_id)}, f"deletion of image {image_id}")

    def delete_class(self, class_name: str) -> int:
        """Remove class ``class_name`` and all its images; return how many images went."""
        with self.lock.write():
            if class_name not in self._ids_of:
                raise NotFoundError(f"class {class_name!r} is not in the index")
            count = len(self._ids_of[class_name])
            self._write_or_fail({"op": "delete_class", "class": class_name}, f"deletion of class {class_name!r}")
            return count

    def compact(self) -> None:
        """Write the snapshot (atomically) and empty the journal; :class:`StorageError` when it cannot be
        written (the journal is then kept, so nothing is lost)."""
        with self.lock.write():
            try:
                self._compact()
            except (OSError, ValueError) as exc:
                self._raise_storage_error(exc, "compaction")

    def close(self) -> None:
        """Compact (when the journal holds anything; a failure keeps the journal) and close the journal."""
        with self.lock.write():
            if self._seq != self._snapshot_seq:
                self._try_compact()
            self._journal.close()
            for engine in (self._engine, self._centroid_engine):
                if engine is not None and hasattr(engine, "close"):
                    engine.close()  # a local Qdrant folder admits one client at a time
            self._folder_lock.release()

    # ---------------------------------------------------------------- internals
    def _raise_storage_error(self, exc: BaseException, what: str) -> None:
        """Raise ``exc`` as a :class:`StorageError` when the file system caused it, else unchanged."""
        cause = _os_error(exc)
        if cause is None:
            raise exc
        full = cause.errno in FULL_DISK
        reason = "the disk is full" if full else (cause.strerror or str(cause))
        message = f"{what} was not made: {reason} ({self.folder}); nothing was written, searches still work"
        log.warning("centrum serve: %s", message)
        raise StorageError(message, full) from exc

    def _write_or_fail(self, record: dict, what: str) -> None:
        try:
            self._write(record)
        except (OSError, ValueError) as exc:
            self._raise_storage_error(exc, what)

    def _write(self, record: dict) -> None:
        """Journal ``record`` durably, then apply it; compact when the journal is long. Caller holds the lock."""
        record = {"seq": self._seq + 1, **record}
        self._journal.append(record)
        self._apply(record)
        if self._seq - self._snapshot_seq >= self._next_compaction:
            self._try_compact()

    def _try_compact(self) -> None:
        """Compact; a failure (a full disk) is logged and retried after another ``compact_every`` writes. The
        write that triggered it is journalled already, so it stays acknowledged."""
        try:
            self._compact()
        except (OSError, ValueError) as exc:
            self._next_compaction = self._seq - self._snapshot_seq + self.compact_every
            log.warning("centrum serve: compaction failed (%s); the journal keeps every write", exc)

    def _read_id_reserve(self) -> int:
        path = self.folder / ID_RESERVE_FILE
        try:
            return int(json.loads(path.read_text())["next_id_reserved"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("centrum serve: %s is unreadable (%s); ids continue from the snapshot and journal", path, exc)
            return 0

    def _reserve_ids(self, upto: int) -> None:
        """Make the high-water mark in ``id-reserve.json`` at least ``upto`` before those ids are handed out."""
        if upto > self._reserved_ids:
            reserve = upto + ID_BLOCK
            atomic_write_json(self.folder / ID_RESERVE_FILE, {"next_id_reserved": reserve})
            self._reserved_ids = reserve

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
            "dim": self.dim,
            "metric": self.metric,
            "seq": self._seq,
            "next_id": self._next_id,
            "next_label": self._next_label,
            "classes": {name: label for name, label in self._label_of.items()},
        }
        write_snapshot(
            self.folder / SNAPSHOT_FILE,
            header,
            self._images.vectors.numpy(),
            self._images.labels,
            self._ids,
            self._paths,
        )
        self._snapshot_seq = self._seq
        self._next_compaction = self.compact_every
        self._journal.truncate(0)

    def _load(self, recover: bool) -> bool:
        """Load the snapshot (or import a built index), replay the journal; return whether to compact now."""
        journal = self.folder / JOURNAL_FILE
        scan = scan_journal(journal, self.dim)
        damage = scan.first_damage()
        if damage is not None and not recover:
            raise damage
        must_compact = False
        snapshot = self.folder / SNAPSHOT_FILE
        if snapshot.is_file():
            try:
                header, arrays = read_snapshot(snapshot)
            except SnapshotDamagedError as exc:
                self._rebuild_without(snapshot, exc, scan)
                must_compact = True
            else:
                self._load_snapshot(snapshot, header, arrays)
        elif self._holds_built_index():
            self._import_built_index()
        for _, record in scan.records:
            if int(record["seq"]) > self._seq:
                self._apply(record)
        if scan.damaged:
            aside = set_aside(scan)
            self._raise_next_id(scan)
            lines = ", ".join(str(n) for n, _, _ in scan.damaged)
            self._report(
                f"recovered {journal}: kept {len(scan.records)} intact record(s), moved damaged line(s) {lines} "
                f"to {aside}; image ids continue from {self._next_id}"
            )
            must_compact = True
        if must_compact:
            self._next_id = max(self._next_id, self._reserved_ids)
        elif scan.torn_tail:  # a write cut short by a crash was never acknowledged: drop it
            with open(journal, "r+b") as handle:
                handle.truncate(journal.stat().st_size - len(scan.torn_tail))
                handle.flush()
                os.fsync(handle.fileno())
        return must_compact

    def _report(self, line: str) -> None:
        self.recovered.append(line)
        log.warning("centrum serve: %s", line)

    def _raise_next_id(self, scan: JournalScan) -> None:
        """Past every id a damaged line might hold (read from its bytes where they are legible)."""
        for _, raw, _ in scan.damaged:
            for group in re.findall(rb'"ids":\s*\[([0-9,\s]*)\]', raw):
                for value in re.findall(rb"[0-9]+", group):
                    self._next_id = max(self._next_id, int(value) + 1)
            for value in re.findall(rb'"id":\s*([0-9]+)', raw):
                self._next_id = max(self._next_id, int(value) + 1)

    def _rebuild_without(self, snapshot: Path, exc: SnapshotDamagedError, scan: JournalScan) -> None:
        """A damaged snapshot: rebuild from the journal when it holds every write since the start (then the
        snapshot adds nothing), else refuse, naming the file."""
        if not scan.complete_from_start:
            raise ValueError(
                f"{exc} and the journal lacks the writes it held: restore {SNAPSHOT_FILE} from a backup, or move "
                "it away to start from the journal alone, losing its images (see docs/serving.md)"
            )
        aside = snapshot.with_name(f"{SNAPSHOT_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(snapshot, aside)
        if self._holds_built_index():
            self._import_built_index()  # the writes since the start were made on top of it
        self._report(f"{exc}: rebuilt from the journal, which holds every write since the start; set aside as {aside}")

    def _load_snapshot(self, snapshot: Path, header: dict, arrays: dict[str, np.ndarray]) -> None:
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
        self._next_id = max(self._next_id, int(header["next_id"]))
        self._seq = self._snapshot_seq = int(header["seq"])

    def _holds_built_index(self) -> bool:
        from centrum.retrieval import is_index_folder

        return is_index_folder(self.folder)

    def _import_built_index(self) -> None:
        """Take over an index written by ``centrum index build``, in the built-in format or on a backend (torch,
        faiss-flat/hnsw, Qdrant): per-image, with labels, paths and the class names it stores (a label without a
        stored name is shown as its number)."""
        from centrum.retrieval import load_index

        built = load_index(self.folder)
        if getattr(built, "kind", None) == "centroid":
            raise ValueError(f"{self.folder} holds a centroid index; the service needs a per-image index")
        if built.dim != self.dim:
            raise ValueError(f"index {self.folder} holds {built.dim}-d embeddings but the model gives {self.dim}-d")
        if isinstance(built, EmbeddingIndex):
            vectors, labels, paths = built.vectors.numpy(), built.labels, built.paths
        else:  # a backend folder: its entries, read out once (the service keeps its own copy from now on)
            try:
                vectors, labels, paths = built.entries()
            finally:
                built.close()
        stored_names = getattr(built, "class_names", {}) or {}
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            name = self._built_class_name(int(label), stored_names)
            self._add(name, vectors[rows], rows.tolist(), [paths[r] for r in rows])

    def _built_class_name(self, label: int, stored: dict[int, str]) -> str:
        """The service's name for label ``label`` of a built index: its stored name when that is a valid and
        unused class name, else the label as text."""
        if label < 0:
            return "unlabelled"
        try:
            name = check_class_name(stored[label])
        except (KeyError, ValueError):
            return str(label)
        return name if name not in self._label_of else f"{name} ({label})"
