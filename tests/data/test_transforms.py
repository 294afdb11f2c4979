"""The "reid" and "dml" transforms against hand-written NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from centrum.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DmlTestTransform,
    DmlTrainTransform,
    ReidTrainTransform,
    build_transform,
    random_erase,
)

MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def smooth_image(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=2)
    return Image.fromarray(array.astype(np.uint8))


def reference_normalize(array: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 -> C x H x W, (x / 255 - mean) / std."""
    return ((array.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    return np.rint((tensor.numpy().transpose(1, 2, 0) * STD + MEAN) * 255.0).astype(np.int64)


def test_reid_test_transform_is_resize_then_normalize() -> None:
    image = noise_image(64, 128)
    out = build_transform("reid", train=False, size=(256, 128))(image)
    expected = reference_normalize(np.asarray(image.resize((128, 256), Image.Resampling.BILINEAR)))
    assert out.shape == (3, 256, 128) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_reid_pad_and_crop_matches_numpy_pad_then_crop() -> None:
    image = noise_image(12, 20, seed=1)
    transform = ReidTrainTransform(size=(20, 12), flip_p=0.0, padding=10, erasing_p=0.0)
    padded = np.pad(np.asarray(image).astype(np.int64), ((10, 10), (10, 10), (0, 0)))
    offsets = set()
    for _ in range(30):
        out = denormalize(transform(image))
        matches = [
            (oy, ox) for oy in range(21) for ox in range(21) if np.array_equal(padded[oy : oy + 20, ox : ox + 12], out)
        ]
        assert matches, "output is not a crop of the zero-padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # the offset is random


def test_reid_flip_only() -> None:
    image = noise_image(8, 16)
    out = ReidTrainTransform(size=(16, 8), flip_p=1.0, padding=0, erasing_p=0.0)(image)
    np.testing.assert_allclose(out.numpy(), reference_normalize(np.asarray(image)[:, ::-1]), atol=1e-5)


def test_reid_train_shape_and_determinism_under_generator() -> None:
    image = noise_image(64, 128)
    a = build_transform("reid", train=True, size=(256, 128), generator=torch.Generator().manual_seed(3))
    b = build_transform("reid", train=True, size=(256, 128), generator=torch.Generator().manual_seed(3))
    outs_a = [a(image) for _ in range(4)]
    outs_b = [b(image) for _ in range(4)]
    assert outs_a[0].shape == (3, 256, 128)
    assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b, strict=True))
    assert not torch.equal(outs_a[0], outs_a[1])


def test_random_erase_fills_one_rectangle() -> None:
    generator = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(20):
        image = torch.full((3, 64, 32), 9.0)
        random_erase(image, p=1.0, value=(1.0, 2.0, 3.0), generator=generator)
        erased = image[0] != 9.0
        rows, cols = torch.nonzero(erased, as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(erased.sum()) == h * w  # a filled rectangle
        assert torch.all(image[:, erased] == torch.tensor([[1.0], [2.0], [3.0]]))
        areas.append(h * w / (64 * 32))
    assert min(areas) >= 0.015 and max(areas) <= 0.42
    untouched = torch.full((3, 8, 8), 9.0)
    random_erase(untouched, p=0.0)
    assert torch.all(untouched == 9.0)


def test_dml_train_crop_and_flip() -> None:
    image = smooth_image(300, 200)
    out = build_transform("dml", train=True)(image)
    assert out.shape == (3, 227, 227)
    # the whole image (scale 1, the image's own aspect ratio), always flipped: resize + mirror
    whole = DmlTrainTransform(size=(100, 150), scale=(1.0, 1.0), ratio=(1.5, 1.5), flip_p=1.0)(image)
    expected = np.asarray(image.resize((150, 100), Image.Resampling.BILINEAR))[:, ::-1]
    np.testing.assert_allclose(whole.numpy(), reference_normalize(expected), atol=1e-5)
    classic = DmlTrainTransform(crop="random", flip_p=0.0)(image)
    resized = np.asarray(image.resize((256, 256), Image.Resampling.BILINEAR)).astype(np.int64)
    got = denormalize(classic)
    assert any(
        np.array_equal(resized[oy : oy + 227, ox : ox + 227], got) for oy in range(30) for ox in range(30)
    )  # a 227 crop of the 256 x 256 resize


def test_dml_test_transform_is_resize_shorter_side_then_center_crop() -> None:
    image = smooth_image(400, 300)
    out = DmlTestTransform()(image)
    assert out.shape == (3, 227, 227)
    two_step = image.resize((341, 256), Image.Resampling.BILINEAR)
    left, top = (341 - 227) // 2, (256 - 227) // 2
    expected = reference_normalize(np.asarray(two_step.crop((left, top, left + 227, top + 227))))
    assert np.abs(out.numpy() - expected).mean() < 0.02  # same geometry, one resampling instead of two


def test_build_transform_rejects_unknown_recipe_and_options() -> None:
    with pytest.raises(ValueError, match="unknown transform recipe 'autoaugment'"):
        build_transform("autoaugment", train=True)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['erase_p'\]"):
        build_transform("reid", train=True, erase_p=0.3)
    test = build_transform("reid", train=False, generator=torch.Generator())  # training-only option is ignored
    assert test(noise_image(10, 20)).shape == (3, 256, 128)
