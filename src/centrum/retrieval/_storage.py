"""One-file index storage: a ``.npz`` written to a temporary name and renamed, so a crash never leaves
a half-written index; the header (JSON) carries the format version, the kind and the dimension."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

import numpy as np

FORMAT_VERSION = 1
INDEX_FILE = "index.npz"


def save_arrays(directory: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> pathlib.Path:
    """Write ``header`` and ``arrays`` to ``directory/index.npz`` atomically; return the file's path."""
    folder = pathlib.Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot save an index to {folder}: it exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    header = {"format_version": FORMAT_VERSION, **header}
    payload = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays}
    target = folder / INDEX_FILE
    fd, tmp_name = tempfile.mkstemp(prefix=".index-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def load_arrays(directory: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an index written by :func:`save_arrays`; check that the file exists and its format version."""
    path = pathlib.Path(directory) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no index at {directory}: {path} does not exist (save one with .save(directory))")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable centrum index: {exc}") from exc
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has index format version {version}, but this centrum reads version {FORMAT_VERSION}"
            + (" (it was written by a newer centrum)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    return header, arrays


def check_dimension(path: str | os.PathLike, header: dict, vectors: np.ndarray, dim: int | None) -> int:
    """The stored dimension, checked against the stored vectors and, when given, the expected ``dim``."""
    stored = int(header["dim"])
    if vectors.ndim != 2 or vectors.shape[1] != stored:
        raise ValueError(f"index at {path} is corrupt: header says {stored}-d but vectors have shape {vectors.shape}")
    if dim is not None and int(dim) != stored:
        raise ValueError(f"index at {path} holds {stored}-d embeddings but {dim}-d were expected")
    return stored
