"""One-file index storage: a ``.npz`` written atomically through :mod:`centrum.io` (temporary file in the same
folder, then rename, normal permissions), so a crash never leaves a half-written index; the header (JSON)
carries the format version, the kind and the dimension.

Loading never unpickles: ``np.load(allow_pickle=False)`` refuses object arrays, so an index file cannot run
code. Every way a file can be damaged (truncated, not a zip, missing arrays, bad header) is a one-line
``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from centrum.io import DamagedFileError, atomic_write, read_npz

FORMAT_VERSION = 1
INDEX_FILE = "index.npz"
REQUIRED_HEADER = ("kind", "dim", "metric")


def save_arrays(directory: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> pathlib.Path:
    """Write ``header`` and ``arrays`` to ``directory/index.npz`` atomically; return the file's path."""
    folder = pathlib.Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot save an index to {folder}: it exists and is not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot save an index to {folder}: {exc.strerror or exc}") from exc
    header = {"format_version": FORMAT_VERSION, **header}
    payload = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays}
    target = folder / INDEX_FILE
    with atomic_write(target, "wb") as handle:
        np.savez(handle, **payload)
    return target


def load_arrays(directory: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an index written by :func:`save_arrays`; check that the file exists, its format version and
    that its header names the kind, dimension and metric."""
    path = pathlib.Path(directory) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no index at {directory}: {path} does not exist (save one with .save(directory))")
    try:
        arrays = read_npz(path)
    except DamagedFileError as exc:
        raise ValueError(f"{path} is not a readable centrum index: {exc.reason}") from exc
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        reason = "it has no header" if isinstance(exc, KeyError) else "its header is not valid JSON (damaged)"
        raise ValueError(f"{path} is not a readable centrum index: {reason}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a readable centrum index: its header is not a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has index format version {version}, but this centrum reads version {FORMAT_VERSION}"
            + (" (it was written by a newer centrum)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    missing = [key for key in REQUIRED_HEADER if key not in header]
    if missing or "vectors" not in arrays:
        what = [f"header field {k}" for k in missing] + ([] if "vectors" in arrays else ["array vectors"])
        raise ValueError(f"{path} is a damaged centrum index: it lacks {', '.join(what)}")
    return header, arrays


def check_dimension(path: str | os.PathLike, header: dict, vectors: np.ndarray, dim: int | None) -> int:
    """The stored dimension, checked against the stored vectors and, when given, the expected ``dim``."""
    stored = int(header["dim"])
    if vectors.ndim != 2 or vectors.shape[1] != stored:
        raise ValueError(f"index at {path} is corrupt: header says {stored}-d but vectors have shape {vectors.shape}")
    if dim is not None and int(dim) != stored:
        raise ValueError(f"index at {path} holds {stored}-d embeddings but {dim}-d were expected")
    return stored


def check_rows(path: str | os.PathLike, arrays: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    """Each array in ``names`` must be there with one entry per stored vector."""
    n = arrays["vectors"].shape[0]
    for name in names:
        if name not in arrays:
            raise ValueError(f"index at {path} is a damaged centrum index: it lacks array {name}")
        if arrays[name].shape[:1] != (n,) and not (name == "paths" and arrays[name].shape == (0,)):
            raise ValueError(f"index at {path} is corrupt: {name} has shape {arrays[name].shape}, {n} rows expected")
