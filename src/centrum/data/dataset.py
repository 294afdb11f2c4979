"""A torch ``Dataset`` over a :class:`SampleList` that either fails on unreadable images or skips and counts them."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from .samples import SampleList, UnreadableImageError

__all__ = ["ImageDataset", "collate_skip_none", "find_unreadable"]

ON_ERROR = ("raise", "skip")
_log = logging.getLogger(__name__)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float C x H x W tensor in [0, 1] (used when no transform is given)."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageDataset(Dataset):
    """Decodes and transforms the images of a :class:`SampleList`: item ``i`` is ``(image, label, camera, i)``.

    ``transform`` maps an RGB ``PIL.Image`` to a tensor (see :func:`centrum.data.build_transform`; without
    one, images become float tensors in [0, 1]). ``on_error`` decides what an unreadable image does:

    - ``"raise"`` (default): ``__getitem__`` raises :class:`UnreadableImageError` (a ``ValueError``) naming
      the path;
    - ``"skip"``: ``__getitem__`` returns ``None`` and logs a warning; use :func:`collate_skip_none` as the
      DataLoader's ``collate_fn`` to drop those items. Skips are recorded in a shared-memory flag per
      image, so they are visible in the main process even when DataLoader workers did the decoding:
      :attr:`skipped_paths` lists them and :meth:`report_skipped` (call it at the end of an epoch or of
      training) warns with their count and paths.
    """

    def __init__(
        self,
        samples: SampleList,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        on_error: str = "raise",
    ) -> None:
        if not isinstance(samples, SampleList):
            raise ValueError(f"samples must be a SampleList, got {type(samples).__name__}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.samples = samples
        self.transform = transform
        self.on_error = on_error
        # Shared memory: writes made in DataLoader worker processes are seen by the main process.
        self._skipped = torch.zeros(len(samples), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int] | None:
        index = int(index)
        try:
            image = self.samples.load(index)
        except UnreadableImageError as exc:
            if self.on_error == "raise":
                raise
            if not self._skipped[index]:  # warn once per image, not once per epoch
                _log.warning("skipping unreadable image: %s", exc)
            self._skipped[index] = 1
            return None
        tensor = self.transform(image) if self.transform is not None else _to_tensor(image)
        return tensor, int(self.samples.labels[index]), int(self.samples.cameras[index]), index

    @property
    def skipped_paths(self) -> list[str]:
        """Paths of the images skipped as unreadable so far (in any worker process)."""
        return [self.samples.paths[i] for i in torch.nonzero(self._skipped).flatten().tolist()]

    def report_skipped(self, max_paths: int = 20) -> int:
        """Warn with the number and paths of the images skipped so far; return that number (0: no warning)."""
        paths = self.skipped_paths
        if paths:
            shown = "\n  ".join(paths[:max_paths])
            more = f"\n  ... and {len(paths) - max_paths} more" if len(paths) > max_paths else ""
            warnings.warn(f"skipped {len(paths)} unreadable image(s):\n  {shown}{more}", stacklevel=2)
        return len(paths)

    def reset_skipped(self) -> None:
        """Forget the skips recorded so far."""
        self._skipped.zero_()


def collate_skip_none(batch: Sequence[Any]) -> Any:
    """``default_collate`` after dropping the ``None`` items of skipped images; ``None`` if all were skipped."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return default_collate(kept)


def find_unreadable(samples: SampleList) -> list[tuple[str, str]]:
    """Decode every image once and return ``(path, reason)`` for each one that cannot be read."""
    bad = []
    for i in range(len(samples)):
        try:
            samples.load(i)
        except UnreadableImageError as exc:
            bad.append((exc.path, exc.reason))
    return bad
