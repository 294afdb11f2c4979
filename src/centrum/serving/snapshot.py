"""The service's snapshot: the whole index of a folder in one ``snapshot.npz``, written atomically.

A snapshot holds a JSON header (format, dimension, metric, the sequence number of the last write it includes,
the next image id and class label, the class name -> label table) and four arrays: ``vectors``, ``labels``,
``ids`` and ``paths``. It is written to a temporary file, fsynced and renamed over the old one, so a crash while
writing leaves the previous snapshot; a snapshot damaged afterwards (truncated, emptied) is reported as
:class:`SnapshotDamagedError` naming the file, never as a zip-library traceback.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from centrum.io import save_npz

SNAPSHOT_FILE = "snapshot.npz"
STORE_FORMAT = "centrum-serve-store-v1"
HEADER_FIELDS = ("dim", "metric", "seq", "next_id", "next_label", "classes")
ARRAYS = ("vectors", "labels", "ids", "paths")


class SnapshotDamagedError(ValueError):
    """``snapshot.npz`` cannot be read (truncated, emptied, not a zip, missing fields)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"snapshot {path} is damaged ({reason})")


def write_snapshot(
    path: Path, header: dict, vectors: np.ndarray, labels: np.ndarray, ids: list[int], paths: list[str]
) -> None:
    """Write the snapshot atomically (temporary file, fsync, rename); ``header`` gains the format tag."""
    save_npz(
        path,
        header=np.frombuffer(json.dumps({"format": STORE_FORMAT, **header}).encode(), dtype=np.uint8),
        vectors=vectors,
        labels=labels,
        ids=np.asarray(ids, dtype=np.int64),
        paths=np.asarray(paths, dtype=str),
    )


def read_snapshot(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of the snapshot at ``path``; :class:`SnapshotDamagedError` when it is unreadable,
    ``ValueError`` when it is another kind of file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        size = path.stat().st_size if path.exists() else 0
        reason = "an empty file" if size == 0 else f"truncated or not a zip archive: {size} bytes"
        raise SnapshotDamagedError(path, reason) from exc
    if "header" not in arrays:
        raise SnapshotDamagedError(path, "no header array")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotDamagedError(path, f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != STORE_FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path} is not a centrum service snapshot (format {fmt!r})")
    missing = [f for f in HEADER_FIELDS if f not in header] + [a for a in ARRAYS if a not in arrays]
    if missing:
        raise SnapshotDamagedError(path, f"missing {', '.join(missing)}")
    n = len(arrays["ids"])
    if any(len(arrays[a]) != n for a in ARRAYS):
        raise SnapshotDamagedError(path, "its arrays have different numbers of rows")
    return header, arrays
