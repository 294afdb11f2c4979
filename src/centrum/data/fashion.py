"""Fashion and product retrieval datasets: DeepFashion In-shop and Consumer-to-shop, Street2Shop, Fashion-MNIST.

All follow the "products" protocol: consumer / street / test photos query a gallery of shop photos, relevant
means same item. Cameras encode the side an image comes from (0 = query side: consumer or street photo,
1 = gallery side: shop photo), so a re-id style same-camera filter would remove nothing.
"""

from __future__ import annotations

import gzip
import json
import re
import warnings
from pathlib import Path

import numpy as np

from ._layout import IMAGE_SUFFIXES, as_root, first_existing, make_splits, read_lines, require_file
from .samples import DatasetSplits, SampleList

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "STREET2SHOP_CATEGORIES",
    "read_deepfashion_c2s",
    "read_deepfashion_inshop",
    "read_fashion_mnist",
    "read_idx",
    "read_street2shop",
]

QUERY_SIDE, GALLERY_SIDE = 0, 1

_ITEM_ID = re.compile(r"^id_(\d+)$")

_INSHOP_LAYOUT = (
    "list_eval_partition.txt (or Eval/list_eval_partition.txt: a count line, a header line "
    "'image_name item_id evaluation_status', then rows like 'img/WOMEN/Dresses/id_00000002/02_1_front.jpg "
    "id_00000002 train|query|gallery') and the img/ folder (or Img/img/) it refers to"
)
_C2S_LAYOUT = (
    "Eval/list_eval_partition.txt (a count line, a header line 'image_pair_name_1 image_pair_name_2 item_id "
    "evaluation_status', then rows 'img/CLOTHING/Blouse/id_00000001/comsumer_01.jpg "
    "img/CLOTHING/Blouse/id_00000001/shop_01.jpg id_00000001 train|val|test'), the img/ folder (or Img/img/) "
    "and, for crop_boxes=True, Anno/list_bbox_consumer2shop.txt"
)


def _item_id(text: str, where: Path) -> int:
    match = _ITEM_ID.match(text)
    if match is None:
        raise ValueError(f"{where}: item id {text!r} is not of the form id_00000002")
    return int(match.group(1))


def _partition_rows(path: Path, columns: int) -> list[list[str]]:
    """Rows of a DeepFashion list file: a count line, a header line, then whitespace-separated rows."""
    lines = read_lines(path)
    if len(lines) < 2 or not lines[0].isdigit():
        raise ValueError(f"{path} must start with a count line and a header line (DeepFashion list format)")
    rows = [line.split() for line in lines[2:]]
    for number, row in enumerate(rows, start=3):
        if len(row) != columns:
            raise ValueError(f"{path} line {number}: expected {columns} columns, got {len(row)}: {' '.join(row)}")
    if int(lines[0]) != len(rows):
        warnings.warn(f"{path} announces {lines[0]} rows but has {len(rows)}", stacklevel=3)
    return rows


def _image_base(root: Path, first_image: str, dataset: str, layout: str) -> Path:
    """The folder the partition file's relative image paths start from: root or root/Img."""
    for base in (root, root / "Img"):
        if (base / first_image).is_file():
            return base
    raise FileNotFoundError(
        f"{dataset}: image {first_image} listed in the partition file is neither under {root} nor under "
        f"{root / 'Img'}; expected {layout}"
    )


def read_deepfashion_inshop(root: str | Path | None = None, **options) -> DatasetSplits:
    """Read DeepFashion In-shop Clothes Retrieval with its published train / query / gallery partition.

    Labels are the item ids (``id_00000002`` -> 2). Published counts: 25,882 training images of 3,997
    items, 14,218 queries, 12,612 gallery images (3,985 items). Options: ``max_per_class``, ``seed``.
    """
    name = "deepfashion-inshop"
    base = as_root(root, name, _INSHOP_LAYOUT)
    partition = first_existing(base, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"], name, _INSHOP_LAYOUT)
    rows = _partition_rows(partition, 3)
    if not rows:
        raise ValueError(f"{partition} lists no images")
    images = _image_base(base, rows[0][0], name, _INSHOP_LAYOUT)
    splits: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "query": ([], []), "gallery": ([], [])}
    for image, item, status in rows:
        if status not in splits:
            raise ValueError(f"{partition}: evaluation_status {status!r} is not train, query or gallery")
        splits[status][0].append(str(images / image))
        splits[status][1].append(_item_id(item, partition))
    lists = {
        split: SampleList(paths, np.array(ids, dtype=np.int64), np.full(len(paths), side, dtype=np.int64))
        for (split, (paths, ids)), side in zip(splits.items(), (QUERY_SIDE, QUERY_SIDE, GALLERY_SIDE), strict=True)
    }
    return make_splits(name, "products", lists["train"], lists["query"], lists["gallery"], root=base, **options)


def _c2s_boxes(base: Path, name: str) -> dict[str, tuple[float, float, float, float]]:
    path = require_file(base, "Anno/list_bbox_consumer2shop.txt", name, _C2S_LAYOUT)
    boxes = {}
    for row in _partition_rows(path, 7):  # image_name clothes_type source_type x_1 y_1 x_2 y_2
        boxes[row[0]] = (float(row[3]), float(row[4]), float(row[5]), float(row[6]))
    return boxes


def read_deepfashion_c2s(
    root: str | Path | None = None,
    *,
    gallery_includes_val: bool = True,
    crop_boxes: bool = False,
    **options,
) -> DatasetSplits:
    """Read DeepFashion Consumer-to-shop Clothes Retrieval from ``Eval/list_eval_partition.txt``.

    Each row pairs a consumer photo with a shop photo of one item. Train = every distinct image of the
    ``train`` rows (consumer camera 0, shop camera 1); query = the distinct consumer photos of the ``test``
    rows; gallery = the distinct shop photos of the ``test`` rows and, with ``gallery_includes_val`` (default,
    as in the CTL authors' evaluation), also those of the ``val`` rows, which act as distractor items.
    ``crop_boxes`` crops every image to its box in ``Anno/list_bbox_consumer2shop.txt``.
    Options: ``max_per_class``, ``seed``.
    """
    name = "deepfashion-c2s"
    base = as_root(root, name, _C2S_LAYOUT)
    partition = require_file(base, "Eval/list_eval_partition.txt", name, _C2S_LAYOUT)
    rows = _partition_rows(partition, 4)
    if not rows:
        raise ValueError(f"{partition} lists no image pairs")
    images = _image_base(base, rows[0][0], name, _C2S_LAYOUT)
    boxes = _c2s_boxes(base, name) if crop_boxes else None
    gallery_splits = {"test", "val"} if gallery_includes_val else {"test"}
    seen: dict[str, set[str]] = {"train": set(), "query": set(), "gallery": set()}
    entries: dict[str, list[tuple[str, int, int]]] = {"train": [], "query": [], "gallery": []}

    def add(split: str, image: str, item: int, side: int) -> None:
        if image not in seen[split]:
            seen[split].add(image)
            entries[split].append((image, item, side))

    for consumer, shop, item_text, status in rows:
        item = _item_id(item_text, partition)
        if status == "train":
            add("train", consumer, item, QUERY_SIDE)
            add("train", shop, item, GALLERY_SIDE)
        elif status in ("val", "test"):
            if status == "test":
                add("query", consumer, item, QUERY_SIDE)
            if status in gallery_splits:
                add("gallery", shop, item, GALLERY_SIDE)
        else:
            raise ValueError(f"{partition}: evaluation_status {status!r} is not train, val or test")

    def to_list(split: str) -> SampleList:
        rel = [e[0] for e in entries[split]]
        box_arr = None
        if boxes is not None:
            missing = [r for r in rel if r not in boxes]
            if missing:
                raise ValueError(f"{name}: no box for {missing[0]} (and {len(missing) - 1} more) in the box file")
            box_arr = np.array([boxes[r] for r in rel], dtype=np.float32).reshape(-1, 4)
        return SampleList(
            [str(images / r) for r in rel],
            np.array([e[1] for e in entries[split]], dtype=np.int64),
            np.array([e[2] for e in entries[split]], dtype=np.int64),
            boxes=box_arr,
        )

    return make_splits(name, "products", to_list("train"), to_list("query"), to_list("gallery"), root=base, **options)


# -- Street2Shop ---------------------------------------------------------------------------------------------
STREET2SHOP_CATEGORIES = (
    "bags",
    "belts",
    "dresses",
    "eyewear",
    "footwear",
    "hats",
    "leggings",
    "outerwear",
    "pants",
    "skirts",
    "tops",
)
_S2S_LAYOUT = (
    "the JSON files of the Street2Shop release (Kiapour et al. 2015) in meta/json/ (or json/, or the root): "
    "retrieval_<category>.json = [{'photo': id, 'product': id}, ...] (shop photos), "
    "train_pairs_<category>.json and test_pairs_<category>.json = [{'photo': id, 'product': id, "
    "'bbox': {'left', 'top', 'width', 'height'}}, ...] (street photos), and the downloaded photos in photos/ "
    "(or images/), one file per photo named by its id, e.g. photos/12345.jpg or photos/000012345.jpg"
)


def _load_json(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of {{photo, product}} entries, got {type(data).__name__}")
    return data


def _photo_files(folder: Path) -> dict[int, str]:
    files = {}
    for path in folder.iterdir():
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit():
            files[int(path.stem)] = str(path)
    return files


def read_street2shop(
    root: str | Path | None = None,
    *,
    categories: str | list[str] | tuple[str, ...] | None = None,
    crop_street: bool = True,
    photos_dir: str | Path | None = None,
    **options,
) -> DatasetSplits:
    """Read Street2Shop (Where2BuyIt) from its per-category JSON files and the photos the user downloaded.

    Query = the boxes of ``test_pairs_<category>.json`` (one query per entry, the street photo cropped to
    its box when ``crop_street``), labelled by product id; gallery = the shop photos of
    ``retrieval_<category>.json``; train = the boxes of ``train_pairs_<category>.json`` plus the shop photos
    of the products they show. ``categories`` (default: every category whose JSON files exist) picks the
    categories; the paper evaluates each category against its own gallery, so pass one category to
    reproduce per-category numbers. Entries whose photo was not downloaded are skipped, with a warning
    that counts them. Options: ``max_per_class``, ``seed``.
    """
    name = "street2shop"
    base = as_root(root, name, _S2S_LAYOUT)
    meta = next((d for d in (base / "meta" / "json", base / "json", base) if any(d.glob("retrieval_*.json"))), None)
    if meta is None:
        raise FileNotFoundError(f"{name} root {base} has no retrieval_<category>.json file; expected {_S2S_LAYOUT}")
    photos = (
        Path(photos_dir) if photos_dir is not None else first_existing(base, ["photos", "images"], name, _S2S_LAYOUT)
    )
    if not photos.is_dir():
        raise FileNotFoundError(f"{name}: photo folder {photos} does not exist; expected {_S2S_LAYOUT}")
    if categories is None:
        wanted = [c for c in STREET2SHOP_CATEGORIES if (meta / f"retrieval_{c}.json").is_file()]
    else:
        wanted = [categories] if isinstance(categories, str) else list(categories)
    for category in wanted:
        for prefix in ("retrieval", "train_pairs", "test_pairs"):
            require_file(meta, f"{prefix}_{category}.json", name, _S2S_LAYOUT)
    files = _photo_files(photos)
    if not files:
        raise FileNotFoundError(
            f"{name}: photo folder {photos} has no images named by photo id; expected {_S2S_LAYOUT}"
        )

    missing = 0
    parts: dict[str, list[tuple[str, int, int, tuple[float, ...]]]] = {"train": [], "query": [], "gallery": []}
    nan_box = (np.nan,) * 4
    for category in wanted:
        shop = _load_json(meta / f"retrieval_{category}.json")
        shop_by_product: dict[int, list[int]] = {}
        for entry in shop:
            shop_by_product.setdefault(int(entry["product"]), []).append(int(entry["photo"]))
        for split, prefix in (("train", "train_pairs"), ("query", "test_pairs")):
            for entry in _load_json(meta / f"{prefix}_{category}.json"):
                photo, product = int(entry["photo"]), int(entry["product"])
                if photo not in files:
                    missing += 1
                    continue
                box = nan_box
                if crop_street and entry.get("bbox"):
                    b = entry["bbox"]
                    box = (float(b["left"]), float(b["top"]), float(b["left"]) + float(b["width"]),
                           float(b["top"]) + float(b["height"]))  # fmt: skip
                parts[split].append((files[photo], product, QUERY_SIDE, box))
        train_products = {p[1] for p in parts["train"]}
        for product, shop_photos in shop_by_product.items():
            for photo in shop_photos:
                if photo not in files:
                    missing += 1
                    continue
                parts["gallery"].append((files[photo], product, GALLERY_SIDE, nan_box))
                if product in train_products:
                    parts["train"].append((files[photo], product, GALLERY_SIDE, nan_box))
    if missing:
        warnings.warn(
            f"{name}: {missing} JSON entries refer to photos that are not in {photos} and were skipped", stacklevel=2
        )

    def to_list(split: str) -> SampleList:
        entries = parts[split]
        return SampleList(
            [e[0] for e in entries],
            np.array([e[1] for e in entries], dtype=np.int64),
            np.array([e[2] for e in entries], dtype=np.int64),
            boxes=np.array([e[3] for e in entries], dtype=np.float32).reshape(-1, 4),
        )

    return make_splits(name, "products", to_list("train"), to_list("query"), to_list("gallery"), root=base, **options)


# -- Fashion-MNIST ---------------------------------------------------------------------------------------------
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FMNIST_LAYOUT = (
    "the IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz (gzipped or not); on Debian/Ubuntu `apt-get install dataset-fashion-mnist` "
    f"puts them in {FASHION_MNIST_ROOT}"
)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format, gzipped or not) into a NumPy array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(dtypes[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(f"{path}: IDX header announces shape {shape} ({expected} bytes) but holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _idx_file(base: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (base / name).is_file():
            return base / name
    raise FileNotFoundError(f"fashion-mnist root {base} has no file '{stem}.gz'; expected {_FMNIST_LAYOUT}")


def read_fashion_mnist(
    root: str | Path | None = None,
    *,
    train_classes: int = 5,
    max_per_class: int | None = None,
    max_train_per_class: int | None = None,
    max_query_per_class: int | None = None,
    max_gallery_per_class: int | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """Read Fashion-MNIST from its IDX files as a class-disjoint product-retrieval task (protocol "products").

    Train = training-file images of classes ``0..train_classes-1`` (default 5: T-shirt/top .. Coat); query =
    t10k images of the remaining classes; gallery = training-file images of the remaining classes. Images
    are 28 x 28 grey, returned as RGB; ``paths`` are ids like ``fashion-mnist/train/00012`` (the row in the
    file). ``max_*_per_class`` subsample each split deterministically under ``seed`` (``max_per_class`` is
    the default for all three), for quick CPU runs.
    """
    base = Path(root).expanduser() if root is not None else FASHION_MNIST_ROOT
    if not base.is_dir():
        hint = " (install it with `apt-get install dataset-fashion-mnist`)" if root is None else ""
        raise FileNotFoundError(f"fashion-mnist root {base} does not exist{hint}; expected {_FMNIST_LAYOUT}")
    if not 1 <= int(train_classes) <= 9:
        raise ValueError(f"train_classes must be between 1 and 9 (Fashion-MNIST has 10 classes), got {train_classes}")
    arrays = {}
    for split in ("train", "t10k"):
        images = read_idx(_idx_file(base, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(base, f"{split}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != (len(images),):
            raise ValueError(
                f"fashion-mnist {split} files disagree: images {images.shape} {images.dtype}, labels {labels.shape}"
            )
        arrays[split] = (images, labels)

    def pick(split: str, classes_from: int, classes_to: int, side: int) -> SampleList:
        images, labels = arrays[split]
        rows = np.flatnonzero((labels >= classes_from) & (labels < classes_to))
        return SampleList(
            [f"fashion-mnist/{split}/{r:05d}" for r in rows],
            labels[rows],
            np.full(len(rows), side, dtype=np.int64),
            images=images,
            rows=rows,
        )

    k = int(train_classes)
    return make_splits(
        "fashion-mnist",
        "products",
        pick("train", 0, k, QUERY_SIDE),
        pick("t10k", k, 10, QUERY_SIDE),
        pick("train", k, 10, GALLERY_SIDE),
        root=base,
        class_names=dict(enumerate(FASHION_MNIST_CLASSES)),
        max_per_class=max_per_class,
        max_train_per_class=max_train_per_class,
        max_query_per_class=max_query_per_class,
        max_gallery_per_class=max_gallery_per_class,
        seed=seed,
    )
