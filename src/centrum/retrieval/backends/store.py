"""The files a backend adds to a saved index directory: ``backend.json`` (backend, kind, dim, metric,
options) and ``backend.npz`` (ids, metadata, engine bytes), both written atomically with :mod:`centrum.io`."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from centrum.io import DamagedFileError, atomic_write_json, read_npz, save_npz

HEADER_FILE = "backend.json"
ARRAYS_FILE = "backend.npz"
FORMAT_VERSION = 1


def write_backend_files(directory: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` then ``header`` into ``directory`` (the header last: its presence marks a complete save)."""
    folder = pathlib.Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot save an index to {folder}: it exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    save_npz(folder / ARRAYS_FILE, **arrays)
    atomic_write_json(folder / HEADER_FILE, {"format_version": FORMAT_VERSION, **header})


def read_header(directory: str | os.PathLike) -> dict:
    """The ``backend.json`` of a saved index directory."""
    path = pathlib.Path(directory) / HEADER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved index backend at {directory}: {path} does not exist")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged: it is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is damaged: it holds no JSON object")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {header.get('format_version')!r}; expected {FORMAT_VERSION}")
    return header


def read_backend_files(directory: str | os.PathLike, backend: str, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Header and arrays of a saved index, checked to be of this backend and kind."""
    header = read_header(directory)
    if header.get("backend") != backend or header.get("kind") != kind:
        raise ValueError(
            f"index at {directory} is a {header.get('backend')!r} {header.get('kind')!r} index, "
            f"not {backend!r} {kind!r}: open it with centrum.retrieval.backends.load_backend"
        )
    path = pathlib.Path(directory) / ARRAYS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"index at {directory} is incomplete: {path} does not exist")
    try:
        arrays = read_npz(path)
    except DamagedFileError as exc:
        raise ValueError(f"index at {directory} is damaged: {path} is not readable: {exc.reason}") from exc
    return header, arrays
