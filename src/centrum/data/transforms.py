"""Training and test-time image transforms of the two recipes, with Pillow, NumPy and torch only (no torchvision).

- ``"reid"`` (re-identification strong baseline, as used by the Centroid Triplet Loss paper): resize to
  ``size``, horizontal flip (p = 0.5), pad 10 with zeros + random crop back to ``size``, ImageNet
  normalisation, random erasing (p = 0.5, area 2-40 %, aspect 0.3-3.3). Test: resize + normalise.
- ``"dml"`` (deep metric learning, GoogLeNet protocol of Symmetrical Synthesis, 227 x 227): random resized
  crop + horizontal flip; test: resize the shorter side to 256 + centre crop 227. ImageNet normalisation.

Every transform maps an RGB ``PIL.Image`` to a float32 ``C x H x W`` tensor. Random draws come from the
``generator`` given to the transform (or torch's global generator, which DataLoader seeds differently in
each worker), so a seeded generator makes a transform deterministic.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RECIPES",
    "DmlTestTransform",
    "DmlTrainTransform",
    "ReidTestTransform",
    "ReidTrainTransform",
    "build_transform",
    "erase_box",
    "random_erase",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the strong baseline's random-erasing fill values (written into the already-normalised tensor)
BASELINE_ERASE_VALUE = (0.4914, 0.4822, 0.4465)
RECIPES = ("reid", "dml")

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _uniform(generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator | None, high: int) -> int:
    """A uniform integer in ``[0, high]`` (inclusive)."""
    return int(torch.randint(0, high + 1, (), generator=generator))


class _Normalize:
    """uint8 H x W x 3 array -> float C x H x W tensor ``(x / 255 - mean) / std``, in one pass over the pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 values (RGB), std positive; got mean={mean}, std={std}")
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(3, 1, 1)
        self.shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)]).view(3, 1, 1)

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        # transposing the uint8 array before the float conversion is ~5x faster than converting a permuted view
        planar = np.ascontiguousarray(array.transpose(2, 0, 1))
        return torch.from_numpy(planar).float().mul_(self.scale).sub_(self.shift)


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def erase_box(
    height: int,
    width: int,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    min_aspect: float = 0.3,
    generator: torch.Generator | None = None,
    attempts: int = 100,
) -> tuple[int, int, int, int] | None:
    """The random-erasing rectangle ``(top, left, h, w)`` of a ``height`` x ``width`` image, or ``None`` (no erasing).

    The draws of :func:`random_erase`, in its order: whether to erase (probability ``p``), then up to ``attempts``
    (area fraction, aspect ratio) pairs until the rectangle fits, then its position.
    """
    if _uniform(generator) >= p:
        return None
    for _ in range(attempts):
        target = _uniform(generator, *area) * height * width
        aspect = _uniform(generator, min_aspect, 1.0 / min_aspect)
        h = round(math.sqrt(target * aspect))
        w = round(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            top = _randint(generator, height - h)
            left = _randint(generator, width - w)
            return (top, left, h, w)
    return None


def random_erase(
    image: torch.Tensor,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    min_aspect: float = 0.3,
    value: Sequence[float] | float | str = BASELINE_ERASE_VALUE,
    generator: torch.Generator | None = None,
    attempts: int = 100,
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) in place on a C x H x W tensor, as in the re-id strong baseline.

    With probability ``p``, a rectangle covering a uniform fraction ``area`` of the image with aspect ratio
    in ``[min_aspect, 1 / min_aspect]`` is filled with ``value`` (per-channel constants, or ``"random"`` for
    standard-normal noise); up to ``attempts`` draws are made to fit the rectangle inside the image.
    """
    _, height, width = image.shape
    box = erase_box(height, width, p, area, min_aspect, generator, attempts)
    if box is None:
        return image
    top, left, h, w = box
    region = image[:, top : top + h, left : left + w]
    if isinstance(value, str):
        if value != "random":
            raise ValueError(f"erasing value must be numbers or 'random', got {value!r}")
        region.copy_(torch.randn(region.shape, generator=generator))
    else:
        fill = torch.as_tensor(value, dtype=image.dtype).reshape(-1, 1, 1)
        region.copy_(fill.expand_as(region))
    return image


class ReidTrainTransform:
    """Re-id training transform: resize, flip, pad + random crop, normalise, random erasing (strong baseline)."""

    def __init__(
        self,
        size: tuple[int, int] = (256, 128),
        flip_p: float = 0.5,
        padding: int = 10,
        erasing_p: float = 0.5,
        erasing_value: Sequence[float] | float | str = BASELINE_ERASE_VALUE,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = _size(size)
        self.flip_p, self.padding, self.erasing_p = float(flip_p), int(padding), float(erasing_p)
        self.erasing_value = erasing_value
        self.normalize = _Normalize(mean, std)
        self.resample = _RESAMPLE[interpolation]
        self.generator = generator

    def draw(self, generator: torch.Generator | None = None) -> tuple[bool, int, int, tuple[int, int, int, int] | None]:
        """One image's random parameters, drawn from ``generator`` (``None``: torch's global one) in the order
        :meth:`__call__` draws them: ``(flip, dy, dx, erase)``, the shift of the pad-and-crop (the output's pixel
        ``(r, c)`` is the resized image's ``(r + dy, c + dx)``, zero outside) and the erased ``(top, left, h, w)``
        or ``None``. The batch augmentation of :mod:`centrum.data.batch_transforms` applies the same draws."""
        flip = _uniform(generator) < self.flip_p
        dy = dx = 0
        if self.padding:
            pad = self.padding
            dy, dx = _randint(generator, 2 * pad) - pad, _randint(generator, 2 * pad) - pad
        erase = None
        if self.erasing_p > 0:
            erase = erase_box(*self.size, p=self.erasing_p, generator=generator)
        return flip, dy, dx, erase

    def __call__(self, image: Image.Image) -> torch.Tensor:
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), self.resample)
        array = np.asarray(image)
        flip, dy, dx, erase = self.draw(self.generator)
        if flip:
            array = array[:, ::-1]
        if self.padding:
            # pad with zeros then crop back to the size == paste the image at a random offset on black
            shifted = np.zeros_like(array)
            rows, cols = height - abs(dy), width - abs(dx)
            if rows > 0 and cols > 0:  # a shift beyond the image leaves only padding
                shifted[max(-dy, 0) : max(-dy, 0) + rows, max(-dx, 0) : max(-dx, 0) + cols] = array[
                    max(dy, 0) : max(dy, 0) + rows, max(dx, 0) : max(dx, 0) + cols
                ]
            array = shifted
        tensor = self.normalize(array)
        if erase is not None:
            top, left, h, w = erase
            region = tensor[:, top : top + h, left : left + w]
            if isinstance(self.erasing_value, str):
                if self.erasing_value != "random":
                    raise ValueError(f"erasing value must be numbers or 'random', got {self.erasing_value!r}")
                # drawn after the rectangle, as random_erase does
                region.copy_(torch.randn(region.shape, generator=self.generator))
            else:
                fill = torch.as_tensor(self.erasing_value, dtype=tensor.dtype).reshape(-1, 1, 1)
                region.copy_(fill.expand_as(region))
        return tensor


class ReidTestTransform:
    """Re-id test transform: resize to ``size`` (height, width) and normalise."""

    def __init__(
        self,
        size: tuple[int, int] = (256, 128),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> None:
        self.size = _size(size)
        self.normalize = _Normalize(mean, std)
        self.resample = _RESAMPLE[interpolation]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), self.resample)
        return self.normalize(np.asarray(image))


class DmlTrainTransform:
    """DML training transform: random resized crop to ``size`` + horizontal flip, normalise.

    ``crop="random_resized"`` (default) samples a box of ``scale`` of the image area with aspect ratio in
    ``ratio`` (the Inception crop), falling back to a centre crop after 10 attempts. ``crop="random"`` is
    the original GoogLeNet / Lifted-Structure protocol: resize to ``resize`` x ``resize`` (256) and take a
    random ``size`` crop.
    """

    def __init__(
        self,
        size: tuple[int, int] = (227, 227),
        crop: str = "random_resized",
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        resize: int = 256,
        flip_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        if crop not in ("random_resized", "random"):
            raise ValueError(f"crop must be 'random_resized' or 'random', got {crop!r}")
        self.size = _size(size)
        self.crop, self.scale, self.ratio, self.resize = crop, tuple(scale), tuple(ratio), int(resize)
        self.flip_p = float(flip_p)
        self.normalize = _Normalize(mean, std)
        self.resample = _RESAMPLE[interpolation]
        self.generator = generator

    def _box(self, width: int, height: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(generator, *self.scale)
            aspect = math.exp(_uniform(generator, *log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = _randint(generator, height - h)
                left = _randint(generator, width - w)
                return (left, top, left + w, top + h)
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return (left, top, left + w, top + h)

    def draw(
        self, width: int, height: int, generator: torch.Generator | None = None
    ) -> tuple[tuple[int, int, int, int], bool]:
        """One image's random parameters for a ``width`` x ``height`` input, drawn from ``generator`` (``None``:
        torch's global one) in the order :meth:`__call__` draws them: ``(box, flip)``. ``box`` is ``(left, top,
        right, bottom)``: for ``crop="random_resized"`` in the input's pixels (resized to ``size``), for
        ``crop="random"`` in the ``resize`` x ``resize`` image (cut out as it is)."""
        out_h, out_w = self.size
        if self.crop == "random_resized":
            box = self._box(width, height, generator)
        else:
            if max(out_h, out_w) > self.resize:
                raise ValueError(f"crop size {self.size} is larger than the resize {self.resize}")
            top = _randint(generator, self.resize - out_h)
            left = _randint(generator, self.resize - out_w)
            box = (left, top, left + out_w, top + out_h)
        return box, _uniform(generator) < self.flip_p

    def __call__(self, image: Image.Image) -> torch.Tensor:
        height, width = self.size
        box, flip = self.draw(*image.size, generator=self.generator)
        if self.crop == "random_resized":
            image = image.resize((width, height), self.resample, box=box)
        else:
            image = image.resize((self.resize, self.resize), self.resample)
            image = image.crop(box)
        array = np.asarray(image)
        if flip:
            array = array[:, ::-1]
        return self.normalize(array)


class DmlTestTransform:
    """DML test transform: resize the shorter side to ``resize`` (256), centre crop ``size`` (227), normalise.

    ``square_resize=True`` resizes to ``resize`` x ``resize`` first instead (the original GoogLeNet protocol).
    """

    def __init__(
        self,
        size: tuple[int, int] = (227, 227),
        resize: int = 256,
        square_resize: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> None:
        self.size = _size(size)
        self.resize, self.square_resize = int(resize), bool(square_resize)
        if max(self.size) > self.resize:
            raise ValueError(f"crop size {self.size} is larger than the resize {self.resize}")
        self.normalize = _Normalize(mean, std)
        self.resample = _RESAMPLE[interpolation]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        if self.square_resize:
            new_w = new_h = self.resize
        elif width <= height:
            new_w, new_h = self.resize, max(1, round(height * self.resize / width))
        else:
            new_w, new_h = max(1, round(width * self.resize / height)), self.resize
        crop_h, crop_w = self.size
        # crop box in resized coordinates, mapped back so PIL resizes only the kept region
        top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        image = image.resize((crop_w, crop_h), self.resample, box=box)
        return self.normalize(np.asarray(image))


def build_transform(
    recipe: str, train: bool, size: int | tuple[int, int] | None = None, **options
) -> Callable[[Image.Image], torch.Tensor]:
    """The transform of ``recipe`` ("reid" or "dml") for training (``train=True``) or test, at ``size``.

    ``size`` is (height, width); default (256, 128) for "reid" and (227, 227) for "dml". ``options`` go to
    :class:`ReidTrainTransform`, :class:`ReidTestTransform`, :class:`DmlTrainTransform` or
    :class:`DmlTestTransform` (e.g. ``erasing_p``, ``padding``, ``scale``, ``generator``); options that only
    apply to training (``generator``, ``flip_p``, ...) are ignored by the test transforms.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown transform recipe {recipe!r}; expected one of {RECIPES}")
    classes = (ReidTrainTransform, ReidTestTransform) if recipe == "reid" else (DmlTrainTransform, DmlTestTransform)
    known = {name for cls in classes for name in inspect.signature(cls).parameters} - {"size"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for the {recipe!r} transforms; expected some of {sorted(known)}")
    if recipe == "reid":
        size = (256, 128) if size is None else _size(size)
        if train:
            return ReidTrainTransform(size, **options)
        return ReidTestTransform(size, **_only(options, ("mean", "std", "interpolation")))
    size = (227, 227) if size is None else _size(size)
    if train:
        return DmlTrainTransform(size, **options)
    return DmlTestTransform(size, **_only(options, ("resize", "square_resize", "mean", "std", "interpolation")))


def _only(options: dict, names: tuple[str, ...]) -> dict:
    return {k: v for k, v in options.items() if k in names}
