"""Users' own data: a CSV file (``path,label[,camera][,split]``) or a folder per class."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ._layout import IMAGE_SUFFIXES, as_root, make_splits
from .samples import DatasetSplits, SampleList

__all__ = ["read_csv", "read_folder"]

SPLITS = ("train", "query", "gallery", "test")
_CSV_LAYOUT = (
    "a CSV file with one row per image: path,label[,camera][,split] (an optional header row naming these "
    "columns; paths relative to the CSV's folder; label an integer or a class name; split one of "
    "train, query, gallery, test)"
)
_FOLDER_LAYOUT = (
    "one sub-folder of images per class (root/<class>/*.jpg), or root/train/<class>/ with root/query/<class>/ "
    "and root/gallery/<class>/, or root/train/<class>/ with root/test/<class>/"
)


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _class_disjoint(samples: SampleList, train_classes: int | None, name: str) -> tuple[SampleList, SampleList]:
    classes = np.unique(samples.labels)
    n_train = len(classes) // 2 if train_classes is None else int(train_classes)
    if not 1 <= n_train < len(classes):
        raise ValueError(
            f"{name}: train_classes must be between 1 and {len(classes) - 1} ({len(classes)} classes), got {n_train}"
        )
    is_train = np.isin(samples.labels, classes[:n_train])
    return samples.subset(is_train), samples.subset(~is_train)


def _assemble(
    name: str,
    base: Path,
    paths: list[str],
    labels: np.ndarray,
    cameras: np.ndarray | None,
    splits: list[str] | None,
    class_names: dict[int, str] | None,
    protocol: str | None,
    train_classes: int | None,
    options: dict,
) -> DatasetSplits:
    split_arr = np.array(splits) if splits is not None else None
    has_cameras = cameras is not None
    if cameras is None:
        # No cameras given: query side 0, gallery side 1, so a re-id camera filter removes nothing.
        cameras = np.zeros(len(paths), dtype=np.int64)
        if split_arr is not None:
            cameras[split_arr == "gallery"] = 1
    samples = SampleList(paths, labels, cameras)
    if split_arr is None or (split_arr == "train").all():
        train, test = _class_disjoint(samples, train_classes, name)
        return make_splits(name, protocol or "dml", train, test, None, root=base, class_names=class_names, **options)
    train = samples.subset(split_arr == "train")
    if (split_arr == "test").any():
        if (split_arr == "query").any() or (split_arr == "gallery").any():
            raise ValueError(f"{name}: use either split 'test' (every test image queries the others) or 'query' and "
                             "'gallery', not both")  # fmt: skip
        return make_splits(
            name, protocol or "dml", train, samples.subset(split_arr == "test"), None, root=base,
            class_names=class_names, **options,
        )  # fmt: skip
    query, gallery = samples.subset(split_arr == "query"), samples.subset(split_arr == "gallery")
    if len(query) == 0 or len(gallery) == 0:
        raise ValueError(f"{name}: rows with split 'query' and rows with split 'gallery' are both needed")
    default_protocol = "reid" if has_cameras else "products"
    return make_splits(
        name, protocol or default_protocol, train, query, gallery, root=base, class_names=class_names, **options
    )


def read_csv(
    root: str | Path | None = None,
    *,
    protocol: str | None = None,
    train_classes: int | None = None,
    check_files: bool = True,
    **options,
) -> DatasetSplits:
    """Read a dataset described by a CSV file with rows ``path,label[,camera][,split]``.

    ``root`` is the CSV file (or a folder holding exactly one ``.csv``). Paths are relative to the CSV's
    folder (absolute paths are kept). Labels may be integers (kept) or class names (numbered in sorted
    order, ``class_names`` maps back). With a ``split`` column: train / query / gallery rows give the
    "reid" protocol when a camera column is present and the "products" protocol otherwise; train / test
    rows give the "dml" protocol. Without it, classes are split class-disjointly: the first
    ``train_classes`` (default half) in sorted order train, the rest form a "dml" test set.
    ``protocol`` overrides the inferred protocol. ``check_files`` checks that every image exists.
    Options: ``max_per_class``, ``seed``.
    """
    name = "csv"
    if root is None:
        raise ValueError(f"csv: pass root=, the CSV file: {_CSV_LAYOUT}")
    path = Path(root).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.csv"))
        if len(found) != 1:
            raise FileNotFoundError(f"csv: folder {path} holds {len(found)} .csv files, expected one: {_CSV_LAYOUT}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"csv: file {path} does not exist; expected {_CSV_LAYOUT}")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [[cell.strip() for cell in row] for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"csv: {path} is empty; expected {_CSV_LAYOUT}")
    if rows[0][0].lower() == "path":
        columns = [c.lower() for c in rows[0]]
        unknown = set(columns) - {"path", "label", "camera", "split"}
        if unknown or "label" not in columns:
            raise ValueError(f"csv: {path} header {rows[0]} must name path, label and optionally camera, split")
        rows = rows[1:]
    else:
        width = len(rows[0])
        if width == 2:
            columns = ["path", "label"]
        elif width == 3:
            columns = ["path", "label", "camera" if _parse_int(rows[0][2]) is not None else "split"]
        elif width == 4:
            columns = ["path", "label", "camera", "split"]
        else:
            raise ValueError(f"csv: {path} row 1 has {width} columns; expected {_CSV_LAYOUT}")
    col = {c: k for k, c in enumerate(columns)}
    for number, row in enumerate(rows, start=1):
        if len(row) != len(columns):
            raise ValueError(f"csv: {path} row {number} has {len(row)} columns, expected {len(columns)}: {row}")
    base = path.parent
    paths = [str(base / row[col["path"]]) for row in rows]
    raw_labels = [row[col["label"]] for row in rows]
    int_labels = [_parse_int(v) for v in raw_labels]
    class_names = None
    if all(v is not None for v in int_labels):
        labels = np.array(int_labels, dtype=np.int64)
    else:
        names = sorted(set(raw_labels))
        index = {n: k for k, n in enumerate(names)}
        labels = np.array([index[v] for v in raw_labels], dtype=np.int64)
        class_names = dict(enumerate(names))
    cameras = None
    if "camera" in col:
        values = [_parse_int(row[col["camera"]]) for row in rows]
        bad = next((k for k, v in enumerate(values) if v is None), None)
        if bad is not None:
            raise ValueError(f"csv: {path} row {bad + 1}: camera {rows[bad][col['camera']]!r} is not an integer")
        cameras = np.array(values, dtype=np.int64)
    splits = None
    if "split" in col:
        splits = [row[col["split"]].lower() for row in rows]
        bad = next((k for k, v in enumerate(splits) if v not in SPLITS), None)
        if bad is not None:
            raise ValueError(f"csv: {path} row {bad + 1}: split {splits[bad]!r} is not one of {SPLITS}")
    if check_files:
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(
                f"csv: {len(missing)} image(s) listed in {path} do not exist, e.g. {missing[0]} "
                "(paths are relative to the CSV's folder)"
            )
    return _assemble(name, base, paths, labels, cameras, splits, class_names, protocol, train_classes, options)


def _class_folders(folder: Path) -> dict[str, list[str]]:
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(str(p) for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if images:
            classes[sub.name] = images
    return classes


def read_folder(
    root: str | Path | None = None,
    *,
    protocol: str | None = None,
    train_classes: int | None = None,
    **options,
) -> DatasetSplits:
    """Read a folder-per-class dataset: ``root/<class>/*.jpg`` (any depth below the class folder).

    If ``root`` holds ``train/``, ``query/`` and ``gallery/`` (each with class sub-folders) those are the
    splits ("products" protocol, query camera 0, gallery camera 1); ``train/`` and ``test/`` give the "dml"
    protocol. Otherwise the classes are split class-disjointly: the first ``train_classes`` (default half)
    in sorted order train, the rest form a "dml" test set. Labels number the class names in sorted order
    across all splits (``class_names`` maps back). Options: ``protocol``, ``max_per_class``, ``seed``.
    """
    name = "folder"
    base = as_root(root, name, _FOLDER_LAYOUT)
    named = [s for s in SPLITS if (base / s).is_dir()]
    if named:
        if "train" not in named or not ({"query", "gallery"} <= set(named) or "test" in named):
            raise FileNotFoundError(
                f"folder: {base} has split folders {named}; expected train/ with query/ and gallery/, or train/ "
                f"with test/ ({_FOLDER_LAYOUT})"
            )
        per_split = {s: _class_folders(base / s) for s in named if s != "test" or "query" not in named}
    else:
        per_split = {None: _class_folders(base)}
    names = sorted({c for classes in per_split.values() for c in classes})
    if not names:
        raise FileNotFoundError(f"folder: {base} has no class folder with images; expected {_FOLDER_LAYOUT}")
    index = {n: k for k, n in enumerate(names)}
    paths: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    for split, classes in per_split.items():
        for class_name, images in classes.items():
            paths += images
            labels += [index[class_name]] * len(images)
            splits += [split or "train"] * len(images)
    return _assemble(
        name, base, paths, np.array(labels, dtype=np.int64), None, None if not named else splits,
        dict(enumerate(names)), protocol, train_classes, options,
    )  # fmt: skip
