"""The training augmentation of :mod:`centrum.data.transforms` applied to a whole batch at once, on its device.

:class:`BatchAugment` takes the per-image training transform (:class:`~centrum.data.ReidTrainTransform` or
:class:`~centrum.data.DmlTrainTransform`) and splits it in two:

- :meth:`BatchAugment.params` draws each image's random parameters on the host, from the image's own seed,
  with the per-image transform's own ``draw`` method (a handful of numbers per image, in the same order, from
  the same generator): the crop box, the flip, the pad-and-crop shift, the erased rectangle are the very ones
  the per-image transform would have used with that seed;
- :meth:`BatchAugment.apply` applies them to a ``B x C x H x W`` uint8 batch on whatever device it lives on, in a
  few batched tensor operations (gathers, two batched matrix products, masks) and no host round trip.

The images it starts from are those of :mod:`centrum.data.cache`: decoded once and stored at the size the
transform's first step produces (see :meth:`BatchAugment.cache_size`). Equality with the per-image path:

- ``"reid"`` (resize, flip, pad + crop, normalise, random erasing) and ``"dml"`` with ``crop="random"`` (resize,
  crop, flip, normalise): the resize is the cache's own (the same Pillow call), everything after it is exact
  integer indexing, so a batch equals the per-image transforms' outputs bit for bit;
- ``"dml"`` with ``crop="random_resized"``: the crop-and-resize is Pillow's bilinear resampling with a box
  (antialiased: its filter widens with the reduction factor) re-implemented as two batched matrix products with
  Pillow's fixed-point weights and its rounding after each pass, so outputs are within one uint8 level of the
  per-image path's when the cache holds the images at their decoded size (datasets whose images share one size:
  Omniglot, Fashion-MNIST). Datasets of mixed sizes are cached at ``resize`` x ``resize``; the box is the same
  fraction of the image, read from that copy.

Plain torch rather than kornia: Pillow's antialiased box resampling is what makes the two paths agree, kornia's
crop-and-resize is not it, and the project keeps its data path free of torchvision-like dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .transforms import DmlTrainTransform, ReidTrainTransform

__all__ = ["BatchAugment"]

#: Pillow's fixed-point precision for 8-bit resampling (Resample.c: 32 - 8 - 2 bits)
_PRECISION_BITS = 22


def _seeded(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


class BatchAugment:
    """The per-image training ``transform`` as a batch operation: host-drawn parameters, device-side pixels.

    ``transform`` is a :class:`~centrum.data.ReidTrainTransform` or :class:`~centrum.data.DmlTrainTransform`
    (as :func:`~centrum.data.build_transform` makes them). ``erasing_value="random"`` is not supported (its noise
    would be drawn on the host, a full image per sample).
    """

    def __init__(self, transform: ReidTrainTransform | DmlTrainTransform) -> None:
        if isinstance(transform, ReidTrainTransform):
            self.kind = "reid"
            if isinstance(transform.erasing_value, str):
                raise ValueError(
                    f"batch augmentation needs numbers for transform_options.erasing_value, "
                    f"got {transform.erasing_value!r}"
                )
            self.fill = torch.as_tensor(transform.erasing_value, dtype=torch.float32).reshape(-1)
        elif isinstance(transform, DmlTrainTransform):
            self.kind = "dml_" + transform.crop
        else:
            raise ValueError(
                f"batch augmentation needs a ReidTrainTransform or DmlTrainTransform, got {type(transform).__name__}"
            )
        if transform.resample != Image.Resampling.BILINEAR and self.kind == "dml_random_resized":
            raise ValueError("batch augmentation re-implements bilinear resampling only; set interpolation: bilinear")
        self.transform = transform
        self.size = transform.size
        self.scale = transform.normalize.scale.reshape(1, 3, 1, 1)
        self.shift = transform.normalize.shift.reshape(1, 3, 1, 1)

    # -- host side ------------------------------------------------------------------------------------------
    def cache_size(self, sizes: np.ndarray) -> tuple[int, int]:
        """``(height, width)`` at which to cache images whose decoded ``(width, height)`` are the rows of ``sizes``:
        the output of the transform's first, deterministic step (``"reid"``: ``size``; ``"dml"`` random crop:
        ``resize`` x ``resize``), or for the random resized crop the images' own size when they all share one,
        else ``resize`` x ``resize``."""
        if self.kind == "reid":
            return self.size
        resize = self.transform.resize
        sizes = np.asarray(sizes).reshape(-1, 2)
        if self.kind == "dml_random_resized" and len(sizes) and (sizes == sizes[0]).all():
            return int(sizes[0, 1]), int(sizes[0, 0])
        return resize, resize

    def resize_for_cache(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """The deterministic first step applied when caching a decoded PIL ``image`` at ``size`` (height, width),
        with the transform's own Pillow call."""
        height, width = size
        if image.size == (width, height):
            return image
        return image.resize((width, height), self.transform.resample)

    def params(self, seeds: Sequence[int | None], sizes: np.ndarray, cache_size: tuple[int, int]) -> torch.Tensor:
        """Each image's random parameters as a ``B x 7`` float64 tensor, drawn from a generator seeded with its
        seed (``None``: torch's global generator) in the per-image transform's order. ``sizes`` are the images'
        decoded ``(width, height)``; boxes are returned in the cached images' (``cache_size``) pixels.

        Columns: ``"reid"``: flip, dy, dx, erase top, left, height, width (height 0: no erasing);
        ``"dml"``: flip, box left, top, right, bottom, 0, 0.
        """
        out = np.zeros((len(seeds), 7), dtype=np.float64)
        cache_h, cache_w = cache_size
        for row, (seed, (width, height)) in enumerate(zip(seeds, np.asarray(sizes).reshape(-1, 2), strict=True)):
            generator = _seeded(seed)
            if self.kind == "reid":
                flip, dy, dx, erase = self.transform.draw(generator)
                out[row, :3] = (flip, dy, dx)
                if erase is not None:
                    out[row, 3:] = erase
            else:
                box, flip = self.transform.draw(int(width), int(height), generator)
                if self.kind == "dml_random_resized":
                    # box drawn in the decoded image's pixels, read from the cached copy (same fraction)
                    sx, sy = cache_w / float(width), cache_h / float(height)
                    box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
                out[row, :5] = (flip, *box)
        return torch.from_numpy(out)

    # -- device side ----------------------------------------------------------------------------------------
    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Augment a ``B x C x H x W`` uint8 batch (``C`` 1 for grey, else 3) with :meth:`params`'s ``B x 7`` rows,
        on the batch's device: the float32 ``B x 3 x h x w`` normalised images of the per-image transform."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            got = f"{images.dtype} {tuple(images.shape)}"
            raise ValueError(f"images must be a B x C x H x W uint8 tensor, C 1 or 3, got {got}")
        if params.shape != (images.shape[0], 7):
            raise ValueError(f"params must be B x 7 for {images.shape[0]} images, got {tuple(params.shape)}")
        device = images.device
        params = params.to(device)
        flip = params[:, 0] > 0.5
        if self.kind == "reid":
            pixels = self._shift(images, flip, params[:, 1].long(), params[:, 2].long())
        elif self.kind == "dml_random":
            pixels = self._crop(images, flip, params[:, 2].long(), params[:, 1].long())
        else:
            pixels = self._resample(images, params[:, 1:5])
            pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
        pixels = pixels.expand(-1, 3, -1, -1)
        # the per-image path's own operations, so the floats agree bit for bit
        out = pixels.float().mul_(self.scale.to(device)).sub_(self.shift.to(device))
        if self.kind == "reid":
            out = self._erase(out, params[:, 3:].long())
        return out

    def _shift(self, images: torch.Tensor, flip: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        """Flip, then the pad-and-crop: output pixel (r, c) is the flipped image's (r + dy, c + dx), zero outside."""
        _, _, h, w = images.shape
        rows = torch.arange(h, device=images.device)[None] + dy[:, None]
        cols = torch.arange(w, device=images.device)[None] + dx[:, None]
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
        picked = self._gather(images, rows.clamp(0, h - 1), cols.clamp(0, w - 1))
        return picked * inside[:, None].to(picked.dtype)

    def _crop(self, images: torch.Tensor, flip: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        """The ``size`` crop at (top, left), then the flip."""
        out_h, out_w = self.size
        rows = top[:, None] + torch.arange(out_h, device=images.device)[None]
        steps = torch.arange(out_w, device=images.device)[None]
        cols = left[:, None] + torch.where(flip[:, None], out_w - 1 - steps, steps)
        return self._gather(images, rows, cols)

    @staticmethod
    def _gather(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``out[b, :, i, j] = images[b, :, rows[b, i], cols[b, j]]``."""
        b, c, _, w = images.shape
        picked = images.gather(2, rows[:, None, :, None].expand(b, c, rows.shape[1], w))
        return picked.gather(3, cols[:, None, None, :].expand(b, c, rows.shape[1], cols.shape[1]))

    def _resample(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Pillow's ``Image.resize(size, BILINEAR, box)`` of every image at once: a horizontal then a vertical
        pass, each a batched product with Pillow's integer weights, rounded to uint8 values in between."""
        # float64 holds Pillow's 32-bit fixed-point sums exactly; MPS has no float64
        dtype = torch.float32 if images.device.type == "mps" else torch.float64
        _, _, in_h, in_w = images.shape
        out_h, out_w = self.size
        boxes = boxes.to(dtype)
        kx = _pil_weights(boxes[:, 0], boxes[:, 2], in_w, out_w)  # B x out_w x in_w
        ky = _pil_weights(boxes[:, 1], boxes[:, 3], in_h, out_h)  # B x out_h x in_h
        x = images.to(dtype)
        x = _round_fixed(torch.matmul(x, kx.transpose(1, 2)[:, None]))  # B x C x in_h x out_w
        return _round_fixed(torch.matmul(ky[:, None], x))  # B x C x out_h x out_w

    def _erase(self, out: torch.Tensor, erase: torch.Tensor) -> torch.Tensor:
        """Fill each image's rectangle (top, left, h, w; h = 0: none) with the erasing value."""
        _, _, h, w = out.shape
        rows = torch.arange(h, device=out.device)[None]
        cols = torch.arange(w, device=out.device)[None]
        top, left, eh, ew = erase.unbind(1)
        in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
        mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
        fill = self.fill.to(out.device).expand(3).reshape(1, 3, 1, 1)
        return torch.where(mask, fill, out)


def _pil_weights(low: torch.Tensor, high: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's bilinear resampling weights (Resample.c ``precompute_coeffs`` + ``normalize_coeffs_8bpc``) for
    reading ``[low, high)`` of an axis of ``in_size`` pixels into ``out_size`` pixels, per batch row: a
    ``B x out_size x in_size`` matrix of integers scaled by 2^22."""
    dtype, device = low.dtype, low.device
    scale = (high - low) / out_size
    filterscale = scale.clamp(min=1.0)
    support = filterscale  # the bilinear filter's support is 1, widened by the reduction factor (antialiasing)
    center = low[:, None] + (torch.arange(out_size, dtype=dtype, device=device)[None] + 0.5) * scale[:, None]
    first = torch.trunc(center - support[:, None] + 0.5).clamp(min=0)
    stop = torch.trunc(center + support[:, None] + 0.5).clamp(max=in_size)
    j = torch.arange(in_size, dtype=dtype, device=device)[None, None]
    weights = (1.0 - ((j - center[..., None] + 0.5) * (1.0 / filterscale)[:, None, None]).abs()).clamp(min=0.0)
    weights = weights * ((j >= first[..., None]) & (j < stop[..., None])).to(dtype)
    total = weights.sum(-1, keepdim=True)
    weights = weights / torch.where(total == 0, torch.ones_like(total), total)
    return torch.trunc(0.5 + weights * float(1 << _PRECISION_BITS))


def _round_fixed(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8``: a fixed-point sum (plus half a unit) shifted back to an integer in [0, 255]."""
    unit = float(1 << _PRECISION_BITS)
    return torch.floor((sums + unit / 2) / unit).clamp_(0, 255)
