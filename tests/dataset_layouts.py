"""Tiny but complete dataset fixtures in the exact published layouts (file names and annotation files).

Each ``make_*(root)`` writes one dataset under ``root`` and returns the root to pass to
:func:`centrum.data.build_dataset`. The defaults are the small fixtures whose exact counts
``tests/data/test_readers.py`` asserts. ``extra_train_classes=n`` adds ``n`` training classes of two images
each (three drawings for Omniglot), every image different, and leaves every default image in its split
(street2shop also lists the extra shop photos in its gallery; Omniglot also adds ``n`` test characters so that
its first-half split keeps the default ones), for tests that need full P x M batches of distinct images.

Import as ``from dataset_layouts import make_market`` (``tests/conftest.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "C2S_ROWS",
    "DEFAULT_COLOR",
    "DUKEMTMC",
    "INSHOP_ROWS",
    "MARKET",
    "extra_color",
    "fashion_mnist_arrays",
    "make_c2s",
    "make_cars",
    "make_cub",
    "make_deepfashion_inshop",
    "make_dukemtmc",
    "make_fashion_mnist",
    "make_market",
    "make_omniglot",
    "make_omniglot_zip",
    "make_sop",
    "make_street2shop",
    "write_idx",
    "write_image",
]


DEFAULT_COLOR = (200, 30, 30)


def write_image(path: Path, color: tuple[int, int, int] = DEFAULT_COLOR, size: tuple[int, int] = (4, 8)) -> None:
    """A tiny (width, height) image at ``path``; format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def extra_color(k: int, shot: int) -> tuple[int, int, int]:
    """A distinct colour for image ``shot`` of extra class ``k``, so that extra images differ after any crop."""
    return (40 + 50 * shot, (20 + 37 * k) % 256, (90 + 71 * k + 29 * shot) % 256)


# -- Market-1501 / DukeMTMC-reID -------------------------------------------------------------------------------
MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s1_000101_01.jpg"],
    "query": ["0003_c1s1_000001_00.jpg", "0004_c6s2_001101_00.jpg"],
    "bounding_box_test": [
        "0003_c2s1_000021_01.jpg",
        "0004_c1s1_000301_02.jpg",
        "0000_c1s1_000000_01.jpg",  # distractor: kept with id 0
        "-1_c3s1_000061_02.jpg",  # junk: dropped
        "0003_c1s1_000031_02.jpg",
    ],
}


def make_market(root: Path, extra_train_classes: int = 0) -> Path:
    """Market-1501: 3 training images of ids 2 and 7, 2 queries, a gallery with a distractor and a junk box.

    ``extra_train_classes`` adds ids 1000, 1001, ... to ``bounding_box_train``, two cameras each.
    """
    for folder, names in MARKET.items():
        for name in names:
            write_image(root / folder / name)
    for k in range(extra_train_classes):
        for shot in range(2):
            write_image(
                root / "bounding_box_train" / f"{1000 + k:04d}_c{1 + (k + shot) % 6}s1_{100 * k:06d}_0{shot}.jpg",
                extra_color(k, shot),
            )
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")  # shipped with the real dataset
    return root


DUKEMTMC = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051341.jpg", "0008_c8_f0000001.jpg"],
    "query": ["0009_c1_f0000100.jpg"],
    "bounding_box_test": ["0009_c2_f0000200.jpg", "0010_c7_f0000300.jpg"],
}


def make_dukemtmc(root: Path, extra_train_classes: int = 0) -> Path:
    """DukeMTMC-reID: 3 training images of ids 5 and 8, one query of id 9, a gallery of ids 9 and 10.

    ``extra_train_classes`` adds ids 1000, 1001, ... to ``bounding_box_train``, two cameras each.
    """
    for folder, files in DUKEMTMC.items():
        for name in files:
            write_image(root / folder / name)
    for k in range(extra_train_classes):
        for shot in range(2):
            write_image(
                root / "bounding_box_train" / f"{1000 + k:04d}_c{1 + (k + shot) % 8}_f{1000 * k + shot:07d}.jpg",
                extra_color(k, shot),
            )
    return root


# -- DeepFashion ------------------------------------------------------------------------------------------------
INSHOP_ROWS = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
    ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
    ("img/MEN/Denim/id_00000081/01_1_front.jpg", "id_00000081", "gallery"),
]


def make_deepfashion_inshop(root: Path, extra_train_classes: int = 0) -> Path:
    """DeepFashion In-shop: ``Eval/list_eval_partition.txt`` (padded as the real file) and ``Img/img/``.

    Default: :data:`INSHOP_ROWS`, one training item; ``extra_train_classes`` adds training items 1000, ...
    with a front and a side view each.
    """
    rows = list(INSHOP_ROWS)
    colors = {}
    for k in range(extra_train_classes):
        item = f"id_{1000 + k:08d}"
        for shot, view in enumerate(("1_front", "2_side")):
            rows.append((f"img/MEN/Tees_Tanks/{item}/01_{view}.jpg", item, "train"))
            colors[rows[-1][0]] = extra_color(k, shot)
    (root / "Eval").mkdir(parents=True)
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    lines += [f"{image:<60}{item} {split}" for image, item, split in rows]  # the real file pads with spaces
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    for image, _, _ in rows:
        write_image(root / "Img" / image, colors.get(image, DEFAULT_COLOR))
    return root


C2S_ROWS = [
    ("img/CLOTHING/Blouse/id_00000001/comsumer_01.jpg", "img/CLOTHING/Blouse/id_00000001/shop_01.jpg", "1", "train"),
    ("img/CLOTHING/Blouse/id_00000001/comsumer_02.jpg", "img/CLOTHING/Blouse/id_00000001/shop_01.jpg", "1", "train"),
    ("img/CLOTHING/Skirt/id_00000005/comsumer_01.jpg", "img/CLOTHING/Skirt/id_00000005/shop_01.jpg", "5", "val"),
    ("img/DRESSES/Dress/id_00000009/comsumer_01.jpg", "img/DRESSES/Dress/id_00000009/shop_01.jpg", "9", "test"),
    ("img/DRESSES/Dress/id_00000009/comsumer_02.jpg", "img/DRESSES/Dress/id_00000009/shop_02.jpg", "9", "test"),
    ("img/DRESSES/Dress/id_00000012/comsumer_01.jpg", "img/DRESSES/Dress/id_00000012/shop_01.jpg", "12", "test"),
]


def make_c2s(root: Path, extra_train_classes: int = 0) -> Path:
    """DeepFashion Consumer-to-shop: ``Eval/list_eval_partition.txt``, ``Anno/list_bbox_consumer2shop.txt``
    (every box x 1..3, y 2..6) and the images under ``img/``.

    Default: :data:`C2S_ROWS` (the dataset's own spelling ``comsumer``); ``extra_train_classes`` adds
    ``train`` pairs of items 1000, ... (one consumer and one shop photo each).
    """
    rows = list(C2S_ROWS)
    colors = {}
    for k in range(extra_train_classes):
        folder = f"img/TOPS/Tee/id_{1000 + k:08d}"
        rows.append((f"{folder}/comsumer_01.jpg", f"{folder}/shop_01.jpg", str(1000 + k), "train"))
        colors.update({rows[-1][0]: extra_color(k, 0), rows[-1][1]: extra_color(k, 1)})
    (root / "Eval").mkdir(parents=True)
    lines = [str(len(rows)), "image_pair_name_1 image_pair_name_2 item_id evaluation_status"]
    lines += [f"{c} {s} id_{int(i):08d} {split}" for c, s, i, split in rows]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    images = sorted({r[0] for r in rows} | {r[1] for r in rows})
    (root / "Anno").mkdir()
    box_lines = [str(len(images)), "image_name clothes_type source_type x_1 y_1 x_2 y_2"]
    box_lines += [f"{image} 1 {1 if 'shop' in image else 2} 1 2 3 6" for image in images]
    (root / "Anno" / "list_bbox_consumer2shop.txt").write_text("\n".join(box_lines) + "\n")
    for image in images:
        write_image(root / image, colors.get(image, DEFAULT_COLOR))
    return root


# -- Street2Shop -------------------------------------------------------------------------------------------------
def make_street2shop(root: Path, extra_train_classes: int = 0) -> Path:
    """Street2Shop: ``meta/json/{retrieval,train_pairs,test_pairs}_<category>.json`` for dresses and hats and
    ``photos/`` named by photo id; one street photo (99) is listed but "not downloaded".

    ``extra_train_classes`` adds dress products 1000, ... with one street box and one shop photo each
    (the shop photos also join the gallery, as ``retrieval_dresses.json`` lists them).
    """
    meta = root / "meta" / "json"
    meta.mkdir(parents=True)
    bbox = {"left": 1, "top": 2, "width": 2, "height": 4}
    files = {
        "retrieval_dresses.json": [{"photo": 10, "product": 100}, {"photo": 11, "product": 100},
                                   {"photo": 12, "product": 200}, {"photo": 13, "product": 300}],
        "train_pairs_dresses.json": [{"photo": 1, "product": 100, "bbox": bbox}],
        "test_pairs_dresses.json": [{"photo": 2, "product": 200, "bbox": bbox},
                                    {"photo": 2, "product": 300, "bbox": bbox},
                                    {"photo": 99, "product": 300, "bbox": bbox}],  # photo 99 not downloaded
        "retrieval_hats.json": [{"photo": 20, "product": 400}],
        "train_pairs_hats.json": [{"photo": 3, "product": 400, "bbox": bbox}],
        "test_pairs_hats.json": [],
    }  # fmt: skip
    photos = dict.fromkeys([1, 2, 3, 10, 11, 12, 13, 20], DEFAULT_COLOR)
    for k in range(extra_train_classes):
        street, shop, product = 1000 + k, 2000 + k, 1000 + k
        files["train_pairs_dresses.json"].append({"photo": street, "product": product, "bbox": bbox})
        files["retrieval_dresses.json"].append({"photo": shop, "product": product})
        photos.update({street: extra_color(k, 0), shop: extra_color(k, 1)})
    for name, entries in files.items():
        (meta / name).write_text(json.dumps(entries))
    for photo, color in photos.items():
        write_image(root / "photos" / f"{photo:09d}.jpg", color)
    return root


# -- CUB / CARS / SOP --------------------------------------------------------------------------------------------
def make_cub(root: Path, extra_train_classes: int = 0) -> Path:
    """CUB-200-2011: ``images/NNN.Name/*.jpg``, ``images.txt``, ``image_class_labels.txt``,
    ``bounding_boxes.txt`` (x, y, width, height = 1, 2, 2, 4) and ``classes.txt``.

    Default: classes 1, 2, 100 (train) and 101, 150, 200 (test), two images each;
    ``extra_train_classes`` adds classes 3, 4, ... (all train classes are 1..100).
    """
    images, labels, boxes = [], [], []
    for class_id in (1, 2, 100, 101, 150, 200, *range(3, 3 + extra_train_classes)):
        folder = f"{class_id:03d}.Bird_{class_id}"
        for k in range(2):
            rel = f"{folder}/Bird_{class_id}_{k:04d}_{k}.jpg"
            write_image(root / "images" / rel, extra_color(class_id - 3, k) if 3 <= class_id < 100 else DEFAULT_COLOR)
            images.append(rel)
            labels.append(class_id)
            boxes.append("1.0 2.0 2.0 4.0")
    n = len(images)
    (root / "images.txt").write_text("".join(f"{i + 1} {images[i]}\n" for i in range(n)))
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {labels[i]}\n" for i in range(n)))
    (root / "bounding_boxes.txt").write_text("".join(f"{i + 1} {boxes[i]}\n" for i in range(n)))
    (root / "classes.txt").write_text("".join(f"{c} {c:03d}.Bird_{c}\n" for c in sorted(set(labels))))
    return root


def make_cars(root: Path, extra_train_classes: int = 0) -> Path:
    """CARS196: ``car_ims/NNNNNN.jpg`` and ``cars_annos.mat`` (the MATLAB struct array ``annotations`` with
    boxes x 0..3, y 1..5, and ``class_names``). Needs scipy.

    Default: classes 1, 1, 98, 99, 99, 196 (1-98 train); ``extra_train_classes`` adds classes 2, 3, ...
    with two images each.
    """
    import scipy.io

    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
             ("class", "O"), ("test", "O")]  # fmt: skip
    classes = [1, 1, 98, 99, 99, 196] + [c for c in range(2, 2 + extra_train_classes) for _ in range(2)]
    records = []
    for k, class_id in enumerate(classes):
        rel = f"car_ims/{k + 1:06d}.jpg"
        write_image(root / rel, extra_color(class_id - 2, k % 2) if 2 <= class_id < 98 else DEFAULT_COLOR)
        records.append((rel, 0, 1, 3, 5, class_id, k % 2))
    annotations = np.array(records, dtype=dtype).reshape(1, -1)
    class_names = np.array([f"Car {c}" for c in range(1, 197)], dtype=object).reshape(1, -1)
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return root


SOP_SUPER_CLASSES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa",
                     "stapler", "table", "toaster")  # fmt: skip


def make_sop(root: Path, extra_train_classes: int = 0) -> Path:
    """Stanford Online Products: ``Ebay_train.txt``, ``Ebay_test.txt`` and the ``<super>_final/`` folders.

    Default: classes 1 (two images) and 2 train, class 11319 (two images) tests; ``extra_train_classes``
    adds training classes 3, 4, ... of two images each.
    """
    root.mkdir(parents=True, exist_ok=True)
    header = "image_id class_id super_class_id path\n"
    train = [
        (1, 1, 1, "bicycle_final/111085122871_0.JPG"),
        (2, 1, 1, "bicycle_final/111085122871_1.JPG"),
        (3, 2, 2, "cabinet_final/222_0.JPG"),
    ]
    colors = {}
    for k in range(extra_train_classes):
        class_id, super_id = 3 + k, 1 + (2 + k) % 12
        for shot in range(2):
            path = f"{SOP_SUPER_CLASSES[super_id - 1]}_final/{1000 + k}_{shot}.JPG"
            train.append((len(train) + 1, class_id, super_id, path))
            colors[path] = extra_color(k, shot)
    n = len(train)
    test = [(n + 1, 11319, 1, "bicycle_final/333_0.JPG"), (n + 2, 11319, 1, "bicycle_final/333_1.JPG")]
    for name, rows in (("Ebay_train.txt", train), ("Ebay_test.txt", test)):
        (root / name).write_text(header + "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows))
        for row in rows:
            write_image(root / row[3], colors.get(row[3], DEFAULT_COLOR))
    return root


# -- Omniglot ------------------------------------------------------------------------------------------------------
def make_omniglot_zip(path: Path, top: str, alphabets: dict[str, list[int]], drawers: int = 3) -> None:
    """An Omniglot zip as distributed: ``<top>/<alphabet>/characterNN/XXXX_YY.png`` (6 x 6 white, one black pixel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for alphabet, char_ids in alphabets.items():
            for k, char_id in enumerate(char_ids, start=1):
                for drawer in range(1, drawers + 1):
                    image = Image.new("1", (6, 6), 1)
                    image.putpixel(((drawer + k // 6) % 6, k % 6), 0)  # distinct up to 36 characters
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                    archive.writestr(
                        f"{top}/{alphabet}/character{k:02d}/{char_id:04d}_{drawer:02d}.png", buffer.getvalue()
                    )


def make_omniglot(root: Path, extra_train_classes: int = 0) -> Path:
    """Omniglot: the two small background zips, which share Greek, as in the real release; 3 drawers each.

    Default: 6 distinct characters (108, 109, 394 train; 395, 900, 901 test, the first half training).
    ``extra_train_classes=n`` adds ``images_evaluation.zip`` with characters 1, ..., n (which sort first, so
    train) and 2000, ..., 1999 + n (test), so that the default characters keep their split.
    """
    make_omniglot_zip(root / "images_background_small1.zip", "images_background_small1",
                      {"Balinese": [108, 109], "Greek": [394, 395]})  # fmt: skip
    make_omniglot_zip(root / "images_background_small2.zip", "images_background_small2",
                      {"Greek": [394, 395], "Tagalog": [900, 901]})  # fmt: skip
    if extra_train_classes:
        extra = {"Angelic": list(range(1, 1 + extra_train_classes)),
                 "Mongolian": list(range(2000, 2000 + extra_train_classes))}  # fmt: skip
        make_omniglot_zip(root / "images_evaluation.zip", "images_evaluation", extra)
    return root


# -- Fashion-MNIST ---------------------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped IDX (MNIST format) file of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fashion_mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What :func:`make_fashion_mnist` writes: ``{"train" | "t10k": (images n x 28 x 28, labels)}``, seeded.

    40 training and 20 test images, labels ``k % 10``: with the reader's default 5 training classes, 4
    images of each of classes 0-4 train, 2 test images of each of classes 5-9 query a gallery of 4 each.
    """
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        arrays[split] = (images, labels)
    return arrays


def make_fashion_mnist(root: Path) -> Path:
    """Fashion-MNIST: the four gzipped IDX files of :func:`fashion_mnist_arrays` in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in fashion_mnist_arrays().items():
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root
