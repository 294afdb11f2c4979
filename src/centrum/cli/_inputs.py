"""What the embed / evaluate / index / search commands share: reading ``.npz`` files with checks that name
the file and the array, class-name tables, and where outputs go."""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np

# arrays holding integer ids; a file with strings here (class names as labels) gets a clear error
INTEGER_ARRAYS = (
    "labels",
    "query_labels",
    "gallery_labels",
    "cameras",
    "query_cameras",
    "gallery_cameras",
    "class_ids",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless its help already states it, or it has none) and keeps the line
    breaks of the description's examples."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "default" in help_text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or (isinstance(default, list) and not default)
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))
        ):
            return help_text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{help_text} (default: {shown})"


def load_npz(path: str | os.PathLike, name: str = "--embeddings") -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (never unpickled); FileNotFoundError / ValueError naming the file.

    Label and camera arrays must hold integers (class names go in ``class_names``).
    """
    from centrum.io import DamagedFileError, read_npz

    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{name} file {file} does not exist")
    try:
        arrays = read_npz(file)
    except DamagedFileError as exc:
        raise ValueError(f"{name} file {file} is not a readable .npz archive: {exc.reason}") from exc
    if not isinstance(arrays, dict) or not arrays:
        raise ValueError(f"{name} file {file} holds no array")
    for key in INTEGER_ARRAYS:
        if key in arrays and arrays[key].size and not np.issubdtype(arrays[key].dtype, np.integer):
            raise ValueError(
                f"{name} file {file}: array {key} must hold integers, got {arrays[key].dtype}"
                + (" (put class names in an array class_names, indexed by label)" if "label" in key else "")
            )
    return arrays


def class_table(arrays: dict[str, np.ndarray], prefix: str = "") -> dict[int, str]:
    """``{label: class name}`` from an .npz's ``class_names`` (indexed by label, or paired with ``class_ids``)."""
    names = arrays.get(f"{prefix}class_names", arrays.get("class_names"))
    if names is None or names.size == 0:
        return {}
    ids = arrays.get(f"{prefix}class_ids", arrays.get("class_ids"))
    ids = np.arange(len(names)) if ids is None or len(ids) != len(names) else ids
    return {int(i): str(n) for i, n in zip(ids, names, strict=True)}


def class_arrays(names: dict[int, str]) -> dict[str, np.ndarray]:
    """The ``class_ids`` / ``class_names`` arrays that store a name table in an .npz."""
    ids = sorted(names)
    return {"class_ids": np.asarray(ids, dtype=np.int64), "class_names": np.asarray([names[i] for i in ids], dtype=str)}


def to_index_labels(
    labels: np.ndarray, names: dict[int, str], index_names: dict[int, str], unknown: int = -2
) -> np.ndarray:
    """Labels numbered by another file's name table, renumbered by the index's (the class name is the
    identity): a named class the index lacks gets ``unknown``; -1 (no class) stays -1. Without names on
    either side the labels are returned unchanged."""
    labels = np.asarray(labels, dtype=np.int64)
    if not names or not index_names:
        return labels
    by_name = {name: label for label, name in index_names.items()}
    return np.array(
        [-1 if lab < 0 else by_name.get(names.get(int(lab), ""), unknown) for lab in labels], dtype=np.int64
    )


def class_name(label: int, names: dict[int, str]) -> str:
    """How a label is shown: its class name, else the number; -1 is "no class"."""
    label = int(label)
    if label == -1:
        return "(no class)"
    return names.get(label, str(label))


def output_file(path: str | os.PathLike, what: str) -> pathlib.Path:
    """``path`` with its folder created; ``ValueError`` naming the folder when it cannot be (read-only, a file)."""
    target = pathlib.Path(path)
    if target.is_dir():
        raise ValueError(f"{what} {target} is a folder; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot write {what} {target}: folder {target.parent}: {exc.strerror or exc}") from exc
    if not os.access(target.parent, os.W_OK):
        raise ValueError(f"cannot write {what} {target}: folder {target.parent} is not writable")
    return target


def absolute_path(path: str) -> str:
    """An image path made absolute when it names an existing file (or zip archive) relative to the working
    folder; other strings (synthetic ids) are kept."""
    if not path or os.path.isabs(path):
        return path
    archive = path.split("::", 1)[0]
    return os.path.abspath(path) if os.path.exists(archive) else path


def resolve_entry_path(path: str, index_dir: str | os.PathLike) -> str:
    """Where an index entry's image is: absolute paths as stored, relative ones against the index folder."""
    if not path or os.path.isabs(path):
        return path
    return os.path.join(os.fspath(index_dir), path)
