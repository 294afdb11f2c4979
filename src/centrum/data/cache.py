"""Training images decoded once and kept as one uint8 tensor, in host memory or on the training device.

``data.cache`` (:class:`~centrum.training.config.DataConfig`):

- ``"none"``: every image is decoded and augmented per step by :class:`~centrum.data.ImageDataset` (the default);
- ``"memory"``: :func:`build_image_cache` decodes every training image once, applies the transform's deterministic
  first step (the resize; see :meth:`~centrum.data.batch_transforms.BatchAugment.cache_size`) and keeps the
  results as one ``N x C x H x W`` uint8 tensor in host memory (``C = 1`` when every image is grey); batches are
  gathered from it by index in the main process and augmented by
  :class:`~centrum.data.batch_transforms.BatchAugment` on the training device;
- ``"device"``: the same tensor moved to the training device once; batches are gathered there, so no image
  crosses from host to device after the first (only the indices and each image's few augmentation numbers do).

:func:`check_fits` refuses, with a one-line message stating the need, a cache larger than 80 % of the host's
available memory (``memory``, or ``device`` on a CPU) or half the device's free memory (``device`` on a GPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .batch_transforms import BatchAugment
from .dataset import ImageDataset
from .samples import SampleList, UnreadableImageError

__all__ = [
    "CACHED_BATCH_KEY",
    "CACHE_MODES",
    "CachedBatches",
    "ImageCache",
    "available_bytes",
    "build_image_cache",
    "check_fits",
]

CACHE_MODES = ("none", "memory", "device")
#: the key that marks a batch of cached uint8 images still to be augmented (see :class:`CachedBatches`)
CACHED_BATCH_KEY = "cached_uint8"
#: shares of the available memory a cache may take: the rest is the model's, the optimiser's, the activations'
HOST_SHARE, DEVICE_SHARE = 0.8, 0.5


@dataclass
class ImageCache:
    """Decoded training images: ``images`` (``N x C x H x W`` uint8, ``C`` 1 or 3), each image's decoded
    ``(width, height)`` in ``sizes`` (``N x 2``, what the augmentation's crop boxes are drawn in), and ``valid``
    (``N`` bools, False for an image skipped as unreadable)."""

    images: torch.Tensor
    sizes: np.ndarray
    valid: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes the images take."""
        return self.images.numel() * self.images.element_size()

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the cached images."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def to(self, device: torch.device | str) -> ImageCache:
        """The same cache with its images on ``device``."""
        return ImageCache(self.images.to(device), self.sizes, self.valid)


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory free for a cache on ``device``: the host's available memory (``MemAvailable``) for the CPU, the
    device's free memory for a CUDA device."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_fits(mode: str, count: int, size: tuple[int, int], channels: int, device: torch.device | str) -> int:
    """The bytes a cache of ``count`` images of ``size`` (height, width) x ``channels`` needs on ``device``; a
    one-line ``ValueError`` stating the need and the limit when it exceeds its share of the free memory."""
    need = int(count) * int(channels) * int(size[0]) * int(size[1])
    device = torch.device(device)
    share = DEVICE_SHARE if device.type != "cpu" else HOST_SHARE
    limit = int(available_bytes(device) * share)
    if need > limit:
        where = "host memory" if device.type == "cpu" else f"{device} memory"
        raise ValueError(
            f"data.cache={mode}: {count} training images at {size[0]}x{size[1]}x{channels} uint8 need "
            f"{need / 2**30:.2f} GiB, more than {share:.0%} of the free {where} ({limit / share / 2**30:.2f} GiB); "
            f"use data.cache=none or a smaller data.image_size"
        )
    return need


class _Decode:
    """Decoded PIL image -> the transform's first step at ``size`` -> ``C x H x W`` uint8 tensor (picklable)."""

    def __init__(self, augment: BatchAugment, size: tuple[int, int]) -> None:
        self.augment, self.size = augment, size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(self.augment.resize_for_cache(image, self.size))
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _keep(batch: Sequence[Any]) -> list[tuple[torch.Tensor, int]]:
    return [(item[0], item[3]) for item in batch if item is not None]


def _is_grey(images: torch.Tensor) -> bool:
    return bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())


def build_image_cache(
    samples: SampleList,
    augment: BatchAugment,
    mode: str = "memory",
    device: torch.device | str = "cpu",
    on_error: str = "raise",
    num_workers: int = 0,
    dataset: ImageDataset | None = None,
) -> ImageCache:
    """Decode every image of ``samples`` once into an :class:`ImageCache` on ``device``, at ``augment``'s cache size.

    The sizes are read from the files' headers first, so :func:`check_fits` refuses before anything is decoded.
    Decoding runs in ``num_workers`` DataLoader workers through ``dataset`` (an :class:`~centrum.data.ImageDataset`
    of ``samples`` whose transform this function sets; one is made when not given) so that ``on_error="skip"``
    records skipped images where the caller reports them. Grey images (all three channels equal, every image)
    are stored with one channel.
    """
    if mode not in ("memory", "device"):
        raise ValueError(f"data.cache must be one of {CACHE_MODES}, got {mode!r}")
    n = len(samples)
    sizes = np.zeros((n, 2), dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for i in range(n):
        try:
            sizes[i] = samples.image_size(i)
        except UnreadableImageError:
            if on_error == "raise":
                raise
            valid[i] = False  # the decoding pass below records and reports it
    size = augment.cache_size(sizes[valid])
    target = torch.device(device) if mode == "device" else torch.device("cpu")
    if dataset is None:
        dataset = ImageDataset(samples, on_error=on_error)
    dataset.transform = _Decode(augment, size)
    first = next((i for i in range(n) if valid[i]), None)
    channels = 3
    if first is not None:
        item = dataset[first]
        channels = 1 if item is not None and _is_grey(item[0][None]) else 3
    check_fits(mode, n, size, channels, target)
    images = torch.zeros((n, channels, *size), dtype=torch.uint8)
    loader = DataLoader(dataset, batch_size=256, num_workers=num_workers, collate_fn=_keep)
    for batch in loader:
        if not batch:
            continue
        block = torch.stack([image for image, _ in batch])
        index = torch.tensor([i for _, i in batch])
        if images.shape[1] == 1 and not _is_grey(block):
            check_fits(mode, n, size, 3, target)
            images = images.expand(-1, 3, -1, -1).contiguous()  # a colour image after all: keep three channels
        images[index] = block[:, : images.shape[1]]
    decoded = dataset._skipped.numpy()[:n] == 0  # the skips recorded in any decoding worker
    return ImageCache(images.to(target), sizes, valid & decoded)


def _identity(batch: Any) -> Any:
    return batch


class CachedBatches(Dataset):
    """Training batches gathered from an :class:`ImageCache`, for a DataLoader whose ``batch_sampler`` is a
    :class:`~centrum.data.PKSampler` (``with_seeds=True``: items are ``(index, seed)``).

    A batch is a dict: ``"cached_uint8"`` (the gathered ``B x C x H x W`` uint8 images, on the cache's device),
    ``"augment"`` (``B x 7`` parameters drawn from each image's seed, :meth:`BatchAugment.params`), ``"labels"``,
    ``"cameras"``, ``"index"``; ``None`` when every image of the batch was skipped as unreadable.
    :meth:`augment` turns it, on its device, into the ``(images, labels, cameras, index)`` tuple of the
    per-image path.
    """

    def __init__(self, cache: ImageCache, augment: BatchAugment, samples: SampleList) -> None:
        self.cache, self.augmenter = cache, augment
        self.labels = torch.from_numpy(np.array(samples.labels, dtype=np.int64))
        self.cameras = torch.from_numpy(np.array(samples.cameras, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor] | None:
        return self.__getitems__([item])

    def __getitems__(self, items: Sequence[int | tuple[int, int]]) -> dict[str, torch.Tensor] | None:
        pairs = [item if isinstance(item, tuple) else (item, None) for item in items]
        pairs = [(int(i), s) for i, s in pairs if self.cache.valid[int(i)]]
        if not pairs:
            return None
        index = torch.tensor([i for i, _ in pairs])
        params = self.augmenter.params([s for _, s in pairs], self.cache.sizes[index.numpy()], self.cache.size)
        images = self.cache.images.index_select(0, index.to(self.cache.images.device))
        return {
            CACHED_BATCH_KEY: images,
            "augment": params,
            "labels": self.labels[index],
            "cameras": self.cameras[index],
            "index": index,
        }

    def augment(self, batch: Any) -> Any:
        """A batch of this dataset (on any device) as ``(images, labels, cameras, index)``, augmented where it is;
        anything else unchanged."""
        if not isinstance(batch, dict) or CACHED_BATCH_KEY not in batch:
            return batch
        images = self.augmenter.apply(batch[CACHED_BATCH_KEY], batch["augment"])
        return images, batch["labels"], batch["cameras"], batch["index"]

    def loader(self, batch_sampler: Any) -> DataLoader:
        """The DataLoader of these batches, in the main process (a gather and a few numbers per image)."""
        return DataLoader(self, batch_sampler=batch_sampler, collate_fn=_identity, num_workers=0)
