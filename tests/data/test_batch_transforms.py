"""Batch augmentation (centrum.data.batch_transforms) against the per-image transforms it replaces: the same
output for the same per-sample seed, and the same distribution (crop boxes, flip rate, pixel means) over
thousands of draws against an independent reference sampler and independent seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from centrum.data import build_transform
from centrum.data.batch_transforms import BatchAugment

# one uint8 level after normalisation, in the channel with the smallest std
LEVEL = 1.0 / (255.0 * 0.224) + 1e-6


def cached(augment: BatchAugment, images: list[Image.Image]) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """The cache's uint8 batch of ``images`` (the transform's first step), their sizes and the cache size."""
    sizes = np.array([im.size for im in images])
    size = augment.cache_size(sizes)
    arrays = [np.asarray(augment.resize_for_cache(im, size)).transpose(2, 0, 1) for im in images]
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))), sizes, size


def per_image(transform, images: list[Image.Image], seeds: list[int]) -> torch.Tensor:
    """Today's path: each image through the transform with torch's global generator seeded by its seed."""
    out = []
    for image, seed in zip(images, seeds, strict=True):
        torch.manual_seed(seed)
        out.append(transform(image))
    return torch.stack(out)


def noise_images(n: int, width: int, height: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    images[:, height // 4 : height // 2, :, :] //= 3  # some structure, so crops differ in mean
    return [Image.fromarray(a) for a in images]


CASES = [
    ("reid", (32, 16), {}),
    ("reid", (32, 16), {"padding": 0, "erasing_p": 1.0, "erasing_value": [1.5, -2.0, 0.25]}),
    ("dml", (24, 24), {"crop": "random", "resize": 30}),
    ("dml", (24, 20), {"scale": (0.08, 1.0), "resize": 24}),
    ("dml", (24, 24), {"scale": (0.8, 1.0), "resize": 24, "flip_p": 0.25}),
]


@pytest.mark.parametrize(("recipe", "size", "options"), CASES)
def test_same_seed_gives_the_per_image_output(recipe: str, size: tuple[int, int], options: dict) -> None:
    transform = build_transform(recipe, True, size, **options)
    augment = BatchAugment(transform)
    images = noise_images(24, 37, 45)  # a common size: random_resized reads the images as decoded
    seeds = list(range(1000, 1024))
    batch, sizes, cache_size = cached(augment, images)
    out = augment.apply(batch, augment.params(seeds, sizes, cache_size))
    expected = per_image(transform, images, seeds)
    assert out.shape == expected.shape and out.dtype == torch.float32
    if recipe == "reid" or options.get("crop") == "random":
        assert torch.equal(out, expected)  # exact indexing after the same resize: bit for bit
    else:
        # Pillow's resampling re-implemented: within one uint8 level (in practice equal)
        assert (out - expected).abs().max().item() <= LEVEL


def test_grey_images_cached_with_one_channel_give_the_rgb_output() -> None:
    transform = build_transform("dml", True, (20, 20), scale=(0.3, 1.0), resize=20)
    augment = BatchAugment(transform)
    grey = [Image.fromarray(a).convert("RGB") for a in np.random.default_rng(3).integers(0, 256, (6, 28, 28), np.uint8)]
    batch, sizes, cache_size = cached(augment, grey)
    seeds = list(range(6))
    out = augment.apply(batch[:, :1].contiguous(), augment.params(seeds, sizes, cache_size))
    assert (out - per_image(transform, grey, seeds)).abs().max().item() <= LEVEL


def test_mixed_sizes_read_the_same_fraction_of_a_resized_copy() -> None:
    transform = build_transform("dml", True, (16, 16), scale=(0.5, 1.0), resize=32, flip_p=0.0)
    augment = BatchAugment(transform)
    images = noise_images(1, 64, 48) + noise_images(1, 40, 80, seed=1)
    _, sizes, cache_size = cached(augment, images)
    assert cache_size == (32, 32)
    params = augment.params([5, 6], sizes, cache_size)
    for row, image, seed in zip(params, images, (5, 6), strict=True):
        box, _ = transform.draw(*image.size, generator=torch.Generator().manual_seed(seed))
        expected = np.array(box, dtype=float) * np.array([32 / image.width, 32 / image.height] * 2)
        np.testing.assert_allclose(row[1:5].numpy(), expected)


def reference_inception_boxes(n: int, width: int, height: int, scale, ratio, rng: np.random.Generator) -> np.ndarray:
    """An independent NumPy sampler of the Inception crop (Szegedy et al. 2015, as torchvision's
    RandomResizedCrop): up to 10 (area, log-aspect) draws until the box fits, else the centre crop."""
    boxes = np.empty((n, 2))
    for k in range(n):
        for _ in range(10):
            target = width * height * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                boxes[k] = (w, h)
                break
        else:
            boxes[k] = (width, height)
    return boxes


def test_crop_boxes_and_flips_have_the_per_image_distribution() -> None:
    width, height, n = 60, 50, 3000
    transform = build_transform("dml", True, (24, 24), scale=(0.08, 1.0), resize=24)
    augment = BatchAugment(transform)
    params = augment.params(list(range(n)), np.tile([width, height], (n, 1)), (height, width)).numpy()
    w, h = params[:, 3] - params[:, 1], params[:, 4] - params[:, 2]
    assert (params[:, 1] >= 0).all() and (params[:, 3] <= width).all() and (params[:, 4] <= height).all()
    ref = reference_inception_boxes(n, width, height, (0.08, 1.0), (3 / 4, 4 / 3), np.random.default_rng(7))
    # area fraction and aspect of the boxes: same distribution as the independent sampler (KS, two-sided)
    assert stats.ks_2samp(w * h / (width * height), ref[:, 0] * ref[:, 1] / (width * height)).pvalue > 1e-3
    assert stats.ks_2samp(w / h, ref[:, 0] / ref[:, 1]).pvalue > 1e-3
    # flips: rate p = 0.5 within 4 standard errors
    assert abs(params[:, 0].mean() - 0.5) < 4 * math.sqrt(0.25 / n)


@pytest.mark.parametrize(
    ("recipe", "size", "options"),
    [("reid", (24, 12), {}), ("dml", (16, 16), {"scale": (0.08, 1.0), "resize": 16})],
)
def test_pixel_means_and_flip_rate_match_independent_per_image_draws(recipe, size, options) -> None:
    # a left-to-right ramp with a dark top band: flips and crops show in the mean image
    ramp = np.tile(np.linspace(0, 255, 30)[None, :, None], (36, 1, 3))
    ramp[:8] *= 0.3
    image = Image.fromarray(ramp.astype(np.uint8))
    transform = build_transform(recipe, True, size, **options)
    augment = BatchAugment(transform)
    n = 2000
    batch, sizes, cache_size = cached(augment, [image])
    params = augment.params(list(range(n)), np.tile(sizes, (n, 1)), cache_size)
    batch_out = augment.apply(batch.expand(n, -1, -1, -1), params)
    image_out = per_image(transform, [image] * n, list(range(10**6, 10**6 + n)))
    # per-pixel means over independent draws agree to within sampling noise (sd of a pixel is < 2.5 here)
    assert (batch_out.mean(0) - image_out.mean(0)).abs().max().item() < 6 * 2.5 / math.sqrt(n)

    def falling(out: torch.Tensor) -> np.ndarray:
        # the ramp rises to the right unless flipped (padding and erasing blur this, alike in both paths)
        row = out[:, 0, out.shape[2] // 2 + 2]
        return (row[:, -4] < row[:, 3]).numpy()

    assert abs(falling(batch_out).mean() - falling(image_out).mean()) < 4 * math.sqrt(0.5 / n)
    assert abs(params[:, 0].mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)


def test_refuses_random_erasing_noise_and_wrong_inputs() -> None:
    with pytest.raises(ValueError, match="erasing_value"):
        BatchAugment(build_transform("reid", True, (16, 8), erasing_value="random"))
    augment = BatchAugment(build_transform("reid", True, (16, 8)))
    with pytest.raises(ValueError, match="uint8"):
        augment.apply(torch.zeros(2, 3, 16, 8), torch.zeros(2, 7))
    with pytest.raises(ValueError, match="B x 7"):
        augment.apply(torch.zeros(2, 3, 16, 8, dtype=torch.uint8), torch.zeros(3, 7))
