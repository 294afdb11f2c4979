"""A synthetic dataset in Market-1501's exact layout for ``benchmarks/gpu.py``'s ``centrum train`` check.

``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` of 128 x 256 (width x height) JPEGs named like
``0002_c1s1_000451_03.jpg`` (id, camera 1-6, sequence, frame, box), as :func:`centrum.data.read_market1501`
reads them: by default Market's 12,936 training images of 751 identities (17 or 18 each), a small query and
gallery set (their identities disjoint from training, as in Market) with distractors (id 0000) and junk boxes
(id -1). Each identity has its own colours (upper and lower body, background); each image its own shift,
brightness and noise. Written by a pool of processes, so that the full set takes seconds.

Used from a fresh process (``python -c "from _gpu_market import main; main([...])"``), where forking the
pool is safe; importing this module runs nothing. Needs only NumPy and Pillow.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 128, 256
MARKET_TRAIN_IMAGES, MARKET_TRAIN_IDS = 12936, 751


def market_name(person: int, index: int) -> str:
    """The Market-1501 file name of image ``index`` of identity ``person`` (camera 1-6 by turn)."""
    camera, sequence = 1 + index % 6, 1 + (index // 6) % 6
    return f"{person:04d}_c{camera}s{sequence}_{25 * index + 1:06d}_{1 + index % 3:02d}.jpg"


def write_image(task: tuple[str, int, int]) -> None:
    """Write one JPEG: ``task`` = (path, identity, image index)."""
    path, person, index = task
    rng = np.random.default_rng([abs(person) + 7, index])
    colours = np.random.default_rng(abs(person) + 7).integers(0, 256, (3, 3))  # identity: upper, lower, background
    image = np.empty((HEIGHT, WIDTH, 3), np.float32)
    image[:] = colours[2]
    top = int(rng.integers(10, 40))
    left, right = int(rng.integers(10, 30)), int(rng.integers(98, 118))
    image[top : top + 100, left:right] = colours[0]
    image[top + 100 : top + 210, left + 8 : right - 8] = colours[1]
    image = image * rng.uniform(0.7, 1.3) + rng.normal(0, 12, image.shape)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def plan(
    root: Path, train_ids: int, train_images: int, query_ids: int, gallery_per_id: int, distractors: int, junk: int
) -> list[tuple[str, int, int]]:
    """Every file to write: (path, identity, index). Training identities are even (0002, 0004, ...), test
    identities odd, as Market's two halves are disjoint; queries come from camera 1, their gallery images
    from cameras 2-6, so that every query has a valid match."""
    tasks = []
    base, extra = divmod(train_images, train_ids)
    for i in range(train_ids):
        person = 2 * (i + 1)
        for j in range(base + (i < extra)):
            tasks.append((str(root / "bounding_box_train" / market_name(person, j)), person, j))
    for i in range(query_ids):
        person = 2 * i + 1
        tasks.append((str(root / "query" / market_name(person, 0)), person, 0))  # index 0: camera 1
        for j in range(1, gallery_per_id + 1):
            index = 6 * j + 1 + (j - 1) % 5  # cameras 2-6
            tasks.append((str(root / "bounding_box_test" / market_name(person, index)), person, index))
    tasks += [(str(root / "bounding_box_test" / market_name(0, j)), 0, j) for j in range(distractors)]
    tasks += [(str(root / "bounding_box_test" / market_name(-1, j).replace("-001", "-1")), -1, j) for j in range(junk)]
    return tasks


def make_market(
    root: Path,
    train_ids: int = MARKET_TRAIN_IDS,
    train_images: int = MARKET_TRAIN_IMAGES,
    query_ids: int = 100,
    gallery_per_id: int = 4,
    distractors: int = 50,
    junk: int = 10,
    workers: int | None = None,
) -> dict[str, int]:
    """Write the dataset under ``root``; returns the number of files per folder."""
    root = Path(root)
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    tasks = plan(root, train_ids, train_images, query_ids, gallery_per_id, distractors, junk)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(tasks) > 200:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(write_image, tasks, chunksize=64):
                pass
    else:
        for task in tasks:
            write_image(task)
    return {
        folder: sum(1 for _ in (root / folder).iterdir())
        for folder in ("bounding_box_train", "query", "bounding_box_test")
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--root DIR [--train-ids N --train-images N --query-ids N --workers N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--train-ids", type=int, default=MARKET_TRAIN_IDS)
    parser.add_argument("--train-images", type=int, default=MARKET_TRAIN_IMAGES)
    parser.add_argument("--query-ids", type=int, default=100)
    parser.add_argument("--gallery-per-id", type=int, default=4)
    parser.add_argument("--distractors", type=int, default=50)
    parser.add_argument("--junk", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    counts = make_market(
        args.root,
        args.train_ids,
        args.train_images,
        args.query_ids,
        args.gallery_per_id,
        args.distractors,
        args.junk,
        args.workers,
    )
    print("written: " + ", ".join(f"{folder} {n}" for folder, n in counts.items()), flush=True)
