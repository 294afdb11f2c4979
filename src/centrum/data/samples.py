"""Image lists with labels and cameras, backed by files, zip archives or an in-memory uint8 array.

A :class:`SampleList` is the unit every reader returns: an immutable sequence of images, each with an
integer class label (person id, product id, class id) and an integer camera id. :class:`DatasetSplits`
groups the train / query / gallery lists of one dataset and says which evaluation protocol they follow.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, overload

import numpy as np
from PIL import Image

__all__ = ["DatasetSplits", "Sample", "SampleList", "UnreadableImageError"]

PROTOCOLS = ("reid", "products", "dml")

#: separator between a zip archive and a member in the ``paths`` of zip-backed samples
ZIP_SEPARATOR = "::"


class UnreadableImageError(ValueError):
    """An image that is missing, truncated or not decodable; the message names its path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


class Sample(NamedTuple):
    """One image record: its path (or synthetic id), class label and camera id."""

    path: str
    label: int
    camera: int


class _ZipReader:
    """Reads members of zip archives, one open handle per archive and per process (safe under fork/spawn)."""

    def __init__(self) -> None:
        self._handles: dict[str, zipfile.ZipFile] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def read(self, archive: str, member: str) -> bytes:
        with self._lock:
            if os.getpid() != self._pid:  # forked worker: never share the parent's file offsets
                self._handles = {}
                self._pid = os.getpid()
            handle = self._handles.get(archive)
            if handle is None:
                handle = zipfile.ZipFile(archive)
                self._handles[archive] = handle
            return handle.read(member)


_ZIP_READER = _ZipReader()


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@contextlib.contextmanager
def _unreadable_as_error(path: str) -> Iterator[None]:
    """Turn whatever reading ``path`` raises (missing file, zip member, undecodable bytes) into an
    :class:`UnreadableImageError` naming it."""
    try:
        yield
    except FileNotFoundError as exc:
        raise UnreadableImageError(path, "file not found") from exc
    except KeyError as exc:
        raise UnreadableImageError(path, "no such member in the zip archive") from exc
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from exc


class SampleList(Sequence):
    """An immutable list of images with ``labels`` (int64), ``cameras`` (int64) and ``paths`` (str).

    Three storage back-ends share this one class:

    - image files: ``paths`` are file paths;
    - members of zip archives (Omniglot as distributed): ``paths`` are ``"archive.zip::member/name.png"``;
    - an in-memory ``uint8`` array (Fashion-MNIST): pass ``images`` (N x H x W grey or N x H x W x 3 RGB) and
      ``rows`` (which row of ``images`` each sample is); ``paths`` are synthetic ids such as
      ``"fashion-mnist/train/00012"``.

    ``boxes`` (optional, N x 4 float, ``x1, y1, x2, y2`` in pixels, NaN for "no box") crops each image on load,
    e.g. the street-photo boxes of Street2Shop queries. Indexing with an int gives a :class:`Sample`;
    indexing with a slice, a boolean mask or an index array gives a new :class:`SampleList` (see
    :meth:`subset`). :meth:`load` returns a decoded RGB ``PIL.Image.Image``.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        cameras: Sequence[int] | np.ndarray | None = None,
        *,
        images: np.ndarray | None = None,
        rows: Sequence[int] | np.ndarray | None = None,
        boxes: np.ndarray | None = None,
    ) -> None:
        n = len(paths)
        labels_arr = np.asarray(labels)
        if labels_arr.shape != (n,):
            raise ValueError(f"labels must have one entry per path ({n}), got shape {labels_arr.shape}")
        if n and not np.issubdtype(labels_arr.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels_arr.dtype}")
        cameras_arr = np.zeros(n, dtype=np.int64) if cameras is None else np.asarray(cameras)
        if cameras_arr.shape != (n,):
            raise ValueError(f"cameras must have one entry per path ({n}), got shape {cameras_arr.shape}")
        if n and not np.issubdtype(cameras_arr.dtype, np.integer):
            raise ValueError(f"cameras must be integers, got dtype {cameras_arr.dtype}")
        if images is not None:
            if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
                raise ValueError(
                    f"images must be a uint8 array N x H x W (grey) or N x H x W x 3 (RGB), "
                    f"got {images.dtype} {images.shape}"
                )
            rows_arr = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
            if rows_arr.shape != (n,):
                raise ValueError(f"rows must have one entry per path ({n}), got shape {rows_arr.shape}")
            if n and (rows_arr.min() < 0 or rows_arr.max() >= len(images)):
                raise ValueError(
                    f"rows must index the {len(images)} images, got range {rows_arr.min()}..{rows_arr.max()}"
                )
            self._images: np.ndarray | None = images
            self._rows: np.ndarray | None = _readonly(rows_arr)
        else:
            if rows is not None:
                raise ValueError("rows is only meaningful together with images")
            self._images = None
            self._rows = None
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.shape != (n, 4):
                raise ValueError(f"boxes must be an N x 4 array (x1, y1, x2, y2) with N = {n}, got {boxes.shape}")
            boxes = _readonly(boxes)
        self._paths: tuple[str, ...] = tuple(str(p) for p in paths)
        self._labels = _readonly(labels_arr.astype(np.int64, copy=False))
        self._cameras = _readonly(cameras_arr.astype(np.int64, copy=False))
        self._boxes = boxes

    # -- sequence protocol -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._paths)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice | np.ndarray | Sequence[int]) -> SampleList: ...

    def __getitem__(self, index):
        if isinstance(index, int | np.integer):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"sample index {i} out of range for {len(self)} samples")
            return Sample(self._paths[i], int(self._labels[i]), int(self._cameras[i]))
        return self.subset(index)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield Sample(self._paths[i], int(self._labels[i]), int(self._cameras[i]))

    def __repr__(self) -> str:
        kind = "array" if self._images is not None else "files"
        return (
            f"SampleList({len(self)} images, {self.num_classes} classes, "
            f"{len(np.unique(self._cameras))} cameras, {kind})"
        )

    # -- attributes -------------------------------------------------------------------------------------
    @property
    def paths(self) -> tuple[str, ...]:
        """The file path (or ``archive::member``, or synthetic id) of every image, in order."""
        return self._paths

    @property
    def labels(self) -> np.ndarray:
        """Class label of every image (int64, read-only)."""
        return self._labels

    @property
    def cameras(self) -> np.ndarray:
        """Camera id of every image (int64, read-only); 0 where the dataset has no cameras."""
        return self._cameras

    @property
    def boxes(self) -> np.ndarray | None:
        """Crop box ``x1, y1, x2, y2`` of every image (NaN row = whole image), or None."""
        return self._boxes

    @property
    def num_classes(self) -> int:
        """Number of distinct labels."""
        return len(np.unique(self._labels))

    @property
    def in_memory(self) -> bool:
        """True when the images live in an in-memory uint8 array rather than on disk."""
        return self._images is not None

    # -- derived lists ----------------------------------------------------------------------------------
    def subset(self, index: slice | np.ndarray | Sequence[int]) -> SampleList:
        """Return the samples picked by a slice, a boolean mask or an array of indices, as a new list."""
        if isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise ValueError(f"boolean mask must have length {len(self)}, got shape {idx.shape}")
                idx = np.flatnonzero(idx)
            elif idx.size == 0:
                idx = idx.astype(np.int64)
            elif not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"subset index must be a slice, boolean mask or integers, got dtype {idx.dtype}")
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} samples")
        return SampleList(
            [self._paths[i] for i in idx],
            self._labels[idx],
            self._cameras[idx],
            images=self._images,
            rows=None if self._rows is None else self._rows[idx],
            boxes=None if self._boxes is None else self._boxes[idx],
        )

    def with_labels(self, labels: np.ndarray) -> SampleList:
        """Return the same images with new labels (e.g. remapped to contiguous training ids)."""
        return SampleList(self._paths, labels, self._cameras, images=self._images, rows=self._rows, boxes=self._boxes)

    def concat(self, other: SampleList) -> SampleList:
        """Return this list followed by ``other`` (both file-backed, or both views of the same array)."""
        if self._images is not other._images:
            raise ValueError("cannot concatenate sample lists backed by different in-memory arrays")
        boxes = None
        if self._boxes is not None or other._boxes is not None:
            boxes = np.concatenate(
                [
                    self._boxes if self._boxes is not None else np.full((len(self), 4), np.nan, np.float32),
                    other._boxes if other._boxes is not None else np.full((len(other), 4), np.nan, np.float32),
                ]
            )
        return SampleList(
            self._paths + other._paths,
            np.concatenate([self._labels, other._labels]),
            np.concatenate([self._cameras, other._cameras]),
            images=self._images,
            rows=None if self._rows is None else np.concatenate([self._rows, other._rows]),
            boxes=boxes,
        )

    # -- decoding ---------------------------------------------------------------------------------------
    def image_size(self, i: int) -> tuple[int, int]:
        """``(width, height)`` of image ``i`` as :meth:`load` returns it (after its box), from the file's header
        only (no pixel decoding). Raises :class:`UnreadableImageError` as :meth:`load` does."""
        i = int(i)
        path = self._paths[i]
        if self._images is not None:
            height, width = self._images.shape[1:3]
        else:
            with _unreadable_as_error(path):
                archive, sep, member = path.rpartition(ZIP_SEPARATOR)
                source: str | io.BytesIO = io.BytesIO(_ZIP_READER.read(archive, member)) if sep else path
                with Image.open(source) as image:
                    width, height = image.size
        if self._boxes is not None and not np.isnan(self._boxes[i]).any():
            x1, y1, x2, y2 = (float(v) for v in self._boxes[i])
            box = (max(0, round(x1)), max(0, round(y1)), min(width, round(x2)), min(height, round(y2)))
            if box[2] > box[0] and box[3] > box[1]:
                width, height = box[2] - box[0], box[3] - box[1]
        return int(width), int(height)

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` as an RGB ``PIL.Image`` (cropped to its box if it has one).

        Raises :class:`UnreadableImageError` (a ``ValueError``) naming the path when the file is missing,
        truncated or not an image.
        """
        i = int(i)
        path = self._paths[i]
        if self._images is not None:
            image = Image.fromarray(self._images[self._rows[i]])
        else:
            with _unreadable_as_error(path):
                archive, sep, member = path.rpartition(ZIP_SEPARATOR)
                if sep:
                    source: str | io.BytesIO = io.BytesIO(_ZIP_READER.read(archive, member))
                else:
                    source = path
                image = Image.open(source)
                image.load()  # decode now, inside the block, so truncated files fail here with their path
                if image.mode != "RGB":
                    rgb = image.convert("RGB")
                    image.close()
                    image = rgb
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self._boxes is not None and not np.isnan(self._boxes[i]).any():
            x1, y1, x2, y2 = (float(v) for v in self._boxes[i])
            width, height = image.size
            box = (max(0, round(x1)), max(0, round(y1)), min(width, round(x2)), min(height, round(y2)))
            if box[2] > box[0] and box[3] > box[1]:
                image = image.crop(box)
        return image


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """The splits of one dataset and the evaluation protocol they follow.

    ``protocol`` is ``"reid"`` (query vs gallery, same-id same-camera gallery images removed), ``"products"``
    (query vs gallery, no camera filtering) or ``"dml"`` (class-disjoint test set in which every image
    queries all the others: ``query`` and ``gallery`` are then the *same* :class:`SampleList` object).
    ``train`` labels are contiguous ``0..num_train_classes-1``; ``train_class_ids[k]`` is the dataset's own
    id of training class ``k``. ``query`` and ``gallery`` keep the dataset's own ids (Market-1501's
    distractor id 0 stays 0). ``class_names`` maps dataset ids to names where the dataset has names.
    """

    name: str
    protocol: str
    train: SampleList
    query: SampleList
    gallery: SampleList
    num_train_classes: int
    train_class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    class_names: dict[int, str] | None = None
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def query_is_gallery(self) -> bool:
        """True for the ``"dml"`` protocol: each test image is a query against all other test images."""
        return self.query is self.gallery

    def summary(self) -> str:
        """A short table of image, class and camera counts per split."""
        rows = [f"{self.name} ({self.protocol} protocol)"]
        parts = [("train", self.train)]
        parts += [("test", self.query)] if self.query_is_gallery else [("query", self.query), ("gallery", self.gallery)]
        for split, samples in parts:
            rows.append(
                f"  {split:<8}{len(samples):>9} images {samples.num_classes:>7} classes "
                f"{len(np.unique(samples.cameras)):>4} cameras"
            )
        return "\n".join(rows)
