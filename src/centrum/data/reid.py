"""Person re-identification datasets: Market-1501 and DukeMTMC-reID, read as published (never downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ._layout import as_root, make_splits, require_dir
from .samples import DatasetSplits, SampleList

__all__ = ["read_dukemtmc", "read_market1501"]

_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d)s(\d+)_(\d+)_(\d+)\.jpg$")
_DUKE_NAME = re.compile(r"^(\d+)_c(\d+)_f(\d+)\.jpg$")
_MARKET_LAYOUT = (
    "bounding_box_train/, query/, bounding_box_test/ with files like 0002_c1s1_000451_03.jpg "
    "(id 0002, camera 1, sequence 1, frame 451, box 3)"
)
_DUKE_LAYOUT = (
    "bounding_box_train/, query/, bounding_box_test/ with files like 0005_c2_f0046985.jpg "
    "(id 0005, camera 2, frame 46985)"
)


def _read_reid_folder(folder: Path, pattern: re.Pattern, dataset: str, layout: str) -> SampleList:
    paths: list[str] = []
    ids: list[int] = []
    cams: list[int] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".jpg":
            continue  # Market-1501 ships Thumbs.db files next to the images
        match = pattern.match(path.name)
        if match is None:
            raise ValueError(f"{dataset}: unexpected file name {path}; expected {layout}")
        person = int(match.group(1))
        if person == -1:
            continue  # junk boxes: neither hits nor misses in the standard protocol, so dropped
        paths.append(str(path))
        ids.append(person)
        cams.append(int(match.group(2)))
    if not paths:
        raise FileNotFoundError(f"{dataset}: folder {folder} has no images; expected {layout}")
    return SampleList(paths, np.array(ids, dtype=np.int64), np.array(cams, dtype=np.int64))


def _read_reid(name: str, root: str | Path | None, pattern: re.Pattern, layout: str, **options) -> DatasetSplits:
    base = as_root(root, name, layout)
    train_dir, query_dir, gallery_dir = (
        require_dir(base, folder, name, layout) for folder in ("bounding_box_train", "query", "bounding_box_test")
    )
    train = _read_reid_folder(train_dir, pattern, name, layout)
    query = _read_reid_folder(query_dir, pattern, name, layout)
    gallery = _read_reid_folder(gallery_dir, pattern, name, layout)
    return make_splits(name, "reid", train, query, gallery, root=base, **options)


def read_market1501(root: str | Path | None = None, **options) -> DatasetSplits:
    """Read Market-1501: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` (Zheng et al. 2015).

    Person id and camera (1-based, 1..6) are parsed from names like ``0002_c1s1_000451_03.jpg``. Junk boxes
    (id -1) are dropped; distractors (id 0000) stay in the gallery with id 0. Published counts: 12,936
    training images of 751 ids, 3,368 queries, 15,913 gallery images. Options: ``max_per_class``, ``seed``.
    """
    return _read_reid("market1501", root, _MARKET_NAME, _MARKET_LAYOUT, **options)


def read_dukemtmc(root: str | Path | None = None, **options) -> DatasetSplits:
    """Read DukeMTMC-reID: same three folders as Market-1501, names like ``0005_c2_f0046985.jpg``.

    Cameras are 1-based (1..8). Published counts: 16,522 training images of 702 ids, 2,228 queries,
    17,661 gallery images. The dataset was withdrawn by its authors in 2019; it is supported, never
    downloaded. Options: ``max_per_class``, ``seed``.
    """
    return _read_reid("dukemtmc", root, _DUKE_NAME, _DUKE_LAYOUT, **options)
