"""Deep metric learning benchmarks: CUB-200-2011, CARS196, Stanford Online Products, Omniglot.

All use class-disjoint splits (protocol "dml"): train on the first half of the classes, test on the rest,
and every test image queries all other test images, so ``query`` and ``gallery`` are the same object.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ._layout import as_root, make_splits, read_lines, require_dir, require_file
from .samples import ZIP_SEPARATOR, DatasetSplits, SampleList

__all__ = ["read_cars196", "read_cub200", "read_omniglot", "read_sop"]

_CUB_LAYOUT = (
    "images/NNN.class_name/*.jpg, images.txt ('1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg'), "
    "image_class_labels.txt ('1 1'), classes.txt ('1 001.Black_footed_Albatross') and, for crop_boxes=True, "
    "bounding_boxes.txt ('1 60.0 27.0 325.0 304.0' = x, y, width, height)"
)
_CARS_LAYOUT = (
    "car_ims/000001.jpg ... and cars_annos.mat (MATLAB struct array 'annotations' with fields relative_im_path, "
    "bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1..196), test)"
)
_SOP_LAYOUT = (
    "Ebay_train.txt and Ebay_test.txt (header 'image_id class_id super_class_id path', rows like "
    "'1 1 1 bicycle_final/111085122871_0.JPG') and the <super_class>_final/ folders they refer to"
)
_OMNIGLOT_LAYOUT = (
    "the Omniglot zip files as distributed (images_background.zip, images_evaluation.zip, "
    "images_background_small1.zip, ...), each holding <set>/<alphabet>/characterNN/XXXX_YY.png "
    "(XXXX = character id, YY = drawer 01..20), or those zips already extracted into folders"
)


def read_cub200(root: str | Path | None = None, *, crop_boxes: bool = False, **options) -> DatasetSplits:
    """Read CUB-200-2011 with the deep-metric-learning split: classes 1-100 train, 101-200 test.

    Published counts: 5,864 training images, 5,924 test images. Test labels keep the dataset's class ids
    (101..200). ``crop_boxes`` crops to ``bounding_boxes.txt`` (the DML protocol uses whole images).
    Options: ``max_per_class``, ``seed``.
    """
    name = "cub200"
    base = as_root(root, name, _CUB_LAYOUT)
    images_dir = require_dir(base, "images", name, _CUB_LAYOUT)
    image_rows = [line.split(maxsplit=1) for line in read_lines(require_file(base, "images.txt", name, _CUB_LAYOUT))]
    label_rows = [line.split() for line in read_lines(require_file(base, "image_class_labels.txt", name, _CUB_LAYOUT))]
    labels_by_id = {int(i): int(c) for i, c in label_rows}
    class_names = None
    if (base / "classes.txt").is_file():
        class_names = {int(i): n for i, n in (line.split(maxsplit=1) for line in read_lines(base / "classes.txt"))}
    ids = [int(i) for i, _ in image_rows]
    missing = [i for i in ids if i not in labels_by_id]
    if missing:
        raise ValueError(f"{name}: image id {missing[0]} of images.txt has no label in image_class_labels.txt")
    paths = [str(images_dir / rel) for _, rel in image_rows]
    labels = np.array([labels_by_id[i] for i in ids], dtype=np.int64)
    boxes = None
    if crop_boxes:
        box_rows = read_lines(require_file(base, "bounding_boxes.txt", name, _CUB_LAYOUT))
        by_id = {int(r[0]): [float(v) for v in r[1:5]] for r in (line.split() for line in box_rows)}
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (by_id[i] for i in ids)], dtype=np.float32)
    samples = SampleList(paths, labels, boxes=boxes)
    train = labels <= 100
    return make_splits(
        name, "dml", samples.subset(train), samples.subset(~train), None, root=base, class_names=class_names, **options
    )


def _mat_field(record, field: str):
    value = record[field]
    while isinstance(value, np.ndarray) and value.size == 1 and value.dtype == object:
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value
    return value


def read_cars196(root: str | Path | None = None, *, crop_boxes: bool = False, **options) -> DatasetSplits:
    """Read CARS196 (Stanford Cars) from ``cars_annos.mat`` with the DML split: classes 1-98 train, 99-196 test.

    Published counts: 8,054 training images, 8,131 test images. The ``test`` flag of the annotation file
    (the classification split) is ignored, as in every DML paper. ``crop_boxes`` crops to the annotated
    boxes. Options: ``max_per_class``, ``seed``.
    """
    import scipy.io

    name = "cars196"
    base = as_root(root, name, _CARS_LAYOUT)
    require_dir(base, "car_ims", name, _CARS_LAYOUT)
    mat_path = require_file(base, "cars_annos.mat", name, _CARS_LAYOUT)
    try:
        mat = scipy.io.loadmat(mat_path, squeeze_me=False)
    except Exception as exc:
        raise ValueError(f"{mat_path} is not a readable MATLAB file: {exc}") from exc
    if "annotations" not in mat:
        raise ValueError(f"{mat_path} has no 'annotations' variable; expected {_CARS_LAYOUT}")
    records = mat["annotations"].ravel()
    needed = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class")
    missing = [f for f in needed if f not in (records.dtype.names or ())]
    if missing:
        raise ValueError(f"{mat_path}: 'annotations' lacks field(s) {missing}; expected {_CARS_LAYOUT}")
    paths, labels, boxes = [], [], []
    for record in records:
        paths.append(str(base / str(_mat_field(record, "relative_im_path"))))
        labels.append(int(_mat_field(record, "class")))
        boxes.append([float(_mat_field(record, f)) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")])
    class_names = None
    if "class_names" in mat:
        names = mat["class_names"].ravel()
        class_names = {k + 1: str(np.asarray(n).ravel()[0]) if np.asarray(n).size else "" for k, n in enumerate(names)}
    label_arr = np.array(labels, dtype=np.int64)
    samples = SampleList(paths, label_arr, boxes=np.array(boxes, dtype=np.float32) if crop_boxes else None)
    train = label_arr <= 98
    return make_splits(
        name, "dml", samples.subset(train), samples.subset(~train), None, root=base, class_names=class_names, **options
    )


def _read_ebay(path: Path, base: Path, name: str) -> SampleList:
    lines = read_lines(path)
    if not lines or lines[0].split() != ["image_id", "class_id", "super_class_id", "path"]:
        raise ValueError(f"{path} must start with the header 'image_id class_id super_class_id path'")
    paths, labels, supers = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        row = line.split()
        if len(row) != 4:
            raise ValueError(f"{path} line {number}: expected 4 columns, got {line!r}")
        paths.append(str(base / row[3]))
        labels.append(int(row[1]))
        supers.append(int(row[2]))
    # The super-class (bicycle, cabinet, ...) is kept as the "camera": it is the only side information.
    return SampleList(paths, np.array(labels, dtype=np.int64), np.array(supers, dtype=np.int64))


def read_sop(root: str | Path | None = None, **options) -> DatasetSplits:
    """Read Stanford Online Products with its published split (``Ebay_train.txt`` / ``Ebay_test.txt``).

    Published counts: 59,551 training images of 11,318 products, 60,502 test images of 11,316 products.
    ``cameras`` hold the super-class id (1..12). Options: ``max_per_class``, ``seed``.
    """
    name = "sop"
    base = as_root(root, name, _SOP_LAYOUT)
    train = _read_ebay(require_file(base, "Ebay_train.txt", name, _SOP_LAYOUT), base, name)
    test = _read_ebay(require_file(base, "Ebay_test.txt", name, _SOP_LAYOUT), base, name)
    return make_splits(name, "dml", train, test, None, root=base, **options)


_OMNIGLOT_NAME = re.compile(r"(?:^|/)([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")


def _omniglot_entries(base: Path) -> list[tuple[str, str, str, int, int]]:
    """(path, alphabet, character folder, character id, drawer) for every drawing, deduplicated."""
    found: dict[tuple[str, str, int], tuple[str, str, str, int, int]] = {}
    zips = sorted(base.glob("*.zip"))
    sources: list[tuple[str, list[str]]] = []
    for archive in zips:
        try:
            with zipfile.ZipFile(archive) as handle:
                sources.append((str(archive) + ZIP_SEPARATOR, handle.namelist()))
        except zipfile.BadZipFile as exc:
            raise ValueError(f"omniglot: {archive} is not a readable zip file: {exc}") from exc
    if not zips:
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            names = [str(p.relative_to(base)) for p in folder.rglob("*.png")]
            sources.append((str(base) + "/", names))
    for prefix, names in sources:
        for member in names:
            match = _OMNIGLOT_NAME.search(member)
            if match is None:
                continue
            alphabet, character, char_id, drawer = match.groups()
            key = (alphabet, character, int(drawer))
            # The small background sets share alphabets (Greek, Latin) with identical files: keep one copy.
            if key not in found:
                found[key] = (prefix + member, alphabet, character, int(char_id), int(drawer))
    return sorted(found.values(), key=lambda e: (e[3], e[4]))


def read_omniglot(
    root: str | Path | None = None,
    *,
    train_classes: int | None = None,
    protocol: str = "dml",
    query_drawers: tuple[int, ...] = (1, 2, 3, 4),
    **options,
) -> DatasetSplits:
    """Read Omniglot from its zip files as distributed (or extracted): class = character, camera = drawer.

    Characters are sorted by their global id (which groups them by alphabet) and split class-disjointly:
    the first ``train_classes`` (default: half) train, the rest test. Drawings present in several zips
    (the two small background sets share Greek and Latin) are read once. With ``protocol="dml"``
    (default) every test drawing queries all others. With ``protocol="reid"`` the test drawings by
    ``query_drawers`` (default drawers 1-4 of 20) are the queries and the others the gallery; the drawer is
    the camera, as each person draws every character once. Labels are the 4-digit character ids;
    ``class_names`` maps them to ``alphabet/characterNN``. Options: ``max_per_class``, ``seed``.
    """
    name = "omniglot"
    base = as_root(root, name, _OMNIGLOT_LAYOUT)
    if protocol not in ("dml", "reid"):
        raise ValueError(f"omniglot protocol must be 'dml' or 'reid', got {protocol!r}")
    entries = _omniglot_entries(base)
    if not entries:
        raise FileNotFoundError(f"omniglot root {base} holds no drawings; expected {_OMNIGLOT_LAYOUT}")
    class_names: dict[int, str] = {}
    for _, alphabet, character, char_id, _ in entries:
        label = f"{alphabet}/{character}"
        if class_names.setdefault(char_id, label) != label:
            raise ValueError(f"omniglot: character id {char_id:04d} is used by both {class_names[char_id]} and {label}")
    classes = sorted(class_names)
    n_train = len(classes) // 2 if train_classes is None else int(train_classes)
    if not 1 <= n_train < len(classes):
        raise ValueError(f"train_classes must be between 1 and {len(classes) - 1} for this copy, got {train_classes}")
    samples = SampleList(
        [e[0] for e in entries],
        np.array([e[3] for e in entries], dtype=np.int64),
        np.array([e[4] for e in entries], dtype=np.int64),
    )
    is_train = np.isin(samples.labels, classes[:n_train])
    train, test = samples.subset(is_train), samples.subset(~is_train)
    if protocol == "dml":
        return make_splits(name, "dml", train, test, None, root=base, class_names=class_names, **options)
    is_query = np.isin(test.cameras, np.asarray(query_drawers, dtype=np.int64))
    if not is_query.any() or is_query.all():
        raise ValueError(f"query_drawers {query_drawers} must select some but not all drawers (1..20)")
    return make_splits(
        name,
        "reid",
        train,
        test.subset(is_query),
        test.subset(~is_query),
        root=base,
        class_names=class_names,
        **options,
    )
