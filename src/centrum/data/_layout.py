"""Helpers shared by the dataset readers: layout checks with helpful errors, subsampling, label remapping."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .samples import DatasetSplits, SampleList

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def as_root(root: str | Path | None, dataset: str, layout: str) -> Path:
    """Return ``root`` as an existing directory, or raise an error naming it and the expected layout."""
    if root is None:
        raise ValueError(f"{dataset}: pass root=, the folder that holds {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset} root {path} does not exist or is not a folder; expected {layout}")
    return path


def _hint(root: Path, names: Iterable[str]) -> str:
    """Name a sub-folder of ``root`` that holds ``names`` (users often pass the parent of the real root)."""
    names = list(names)
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return ""
    for child in children:
        if all((child / n).exists() for n in names):
            return f" (did you mean root={child}?)"
    return ""


def require_dir(root: Path, name: str, dataset: str, layout: str) -> Path:
    """Return ``root / name``, or raise FileNotFoundError naming the missing folder and the expected layout."""
    path = root / name
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset} root {root} has no folder '{name}'; expected {layout}{_hint(root, [name])}")
    return path


def require_file(root: Path, name: str, dataset: str, layout: str) -> Path:
    """Return ``root / name``, or raise FileNotFoundError naming the missing file and the expected layout."""
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{dataset} root {root} has no file '{name}'; expected {layout}{_hint(root, [name])}")
    return path


def first_existing(root: Path, candidates: Iterable[str], dataset: str, layout: str) -> Path:
    """Return the first of ``root / c`` that exists, or raise FileNotFoundError naming all of them."""
    candidates = list(candidates)
    for name in candidates:
        if (root / name).exists():
            return root / name
    shown = " or ".join(f"'{c}'" for c in candidates)
    raise FileNotFoundError(f"{dataset} root {root} has no {shown}; expected {layout}{_hint(root, candidates[:1])}")


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def subsample_per_class(samples: SampleList, max_per_class: int | None, seed: int) -> SampleList:
    """Keep at most ``max_per_class`` images of each class, chosen at random under ``seed``, in original order."""
    if max_per_class is None:
        return samples
    if int(max_per_class) < 1:
        raise ValueError(f"max_per_class must be a positive integer or None, got {max_per_class}")
    rng = np.random.default_rng(seed)
    _, inverse, counts = np.unique(samples.labels, return_inverse=True, return_counts=True)
    groups = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    keep = [g if len(g) <= max_per_class else rng.choice(g, size=int(max_per_class), replace=False) for g in groups]
    if not keep:
        return samples
    return samples.subset(np.sort(np.concatenate(keep)))


def make_splits(
    name: str,
    protocol: str,
    train: SampleList,
    query: SampleList,
    gallery: SampleList | None,
    *,
    root: Path | None = None,
    class_names: dict[int, str] | None = None,
    max_per_class: int | None = None,
    max_train_per_class: int | None = None,
    max_query_per_class: int | None = None,
    max_gallery_per_class: int | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """Subsample, remap train labels to ``0..K-1`` and bundle the splits.

    ``gallery=None`` means the "dml" protocol: the test list serves as both query and gallery (same object).
    """
    train = subsample_per_class(train, max_train_per_class or max_per_class, seed)
    query = subsample_per_class(query, max_query_per_class or max_per_class, seed + 1)
    if gallery is None:
        gallery = query
    else:
        gallery = subsample_per_class(gallery, max_gallery_per_class or max_per_class, seed + 2)
    if len(train) == 0:
        raise ValueError(f"{name}: the training split is empty; check the root folder and the options")
    if len(query) == 0 or len(gallery) == 0:
        raise ValueError(f"{name}: the query or gallery split is empty; check the root folder and the options")
    class_ids, contiguous = np.unique(train.labels, return_inverse=True)
    train = train.with_labels(contiguous.astype(np.int64))
    return DatasetSplits(
        name=name,
        protocol=protocol,
        train=train,
        query=query,
        gallery=gallery,
        num_train_classes=len(class_ids),
        train_class_ids=class_ids.astype(np.int64),
        class_names=class_names,
        root=root,
    )
