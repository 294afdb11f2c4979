"""Image files and folders named by a user, as a :class:`~centrum.data.SampleList` with class names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from centrum.data import IMAGE_SUFFIXES, SampleList
from centrum.data.custom import _class_folders


def collect_images(inputs: Sequence[str | Path]) -> tuple[SampleList, list[str]]:
    """Image files, and the images of folders, as a SampleList with absolute paths; returns it and the
    sorted class names its labels index.

    Inside a folder, the images of each sub-folder are of the class named by that sub-folder (read as
    :func:`centrum.data.read_folder` reads a folder-per-class dataset); images directly in the folder and
    files named on their own have label -1 (no class). Raises ``FileNotFoundError`` for a path that is
    neither, ``ValueError`` for a folder without images.
    """
    paths: list[str] = []
    classes: list[str | None] = []
    for item in inputs:
        item = Path(item).expanduser()
        if item.is_file():
            paths.append(str(item.resolve()))
            classes.append(None)
        elif item.is_dir():
            loose = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            per_class = _class_folders(item)
            if not loose and not per_class:
                raise ValueError(f"folder {item} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            for p in loose:
                paths.append(str(p.resolve()))
                classes.append(None)
            for name, images in per_class.items():
                paths += [str(Path(p).resolve()) for p in images]
                classes += [name] * len(images)
        else:
            raise FileNotFoundError(f"{item} is neither an image file nor a folder")
    names = sorted({c for c in classes if c is not None})
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[c] if c is not None else -1 for c in classes], dtype=np.int64)
    return SampleList(paths, labels), names
