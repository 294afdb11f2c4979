"""data.cache (centrum.data.cache): decoded pixels equal to the per-image path's, grey images on one channel,
unreadable images skipped or named, a one-line refusal when the cache would not fit, and training from the
cache (memory and device) giving the very weights of training from files, resumable mid-epoch."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from centrum.data import ImageDataset, PKSampler, SampleList, UnreadableImageError, build_transform
from centrum.data.batch_transforms import BatchAugment
from centrum.data.cache import CachedBatches, build_image_cache, check_fits
from centrum.training import config_from_dict
from centrum.training.datamodule import RetrievalDataModule
from run_logs import epoch_losses


def _stripes_helpers():
    spec = importlib.util.spec_from_file_location(
        "stripes_conftest", Path(__file__).parents[1] / "training" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_images(root: Path, sizes: list[tuple[int, int]], grey: bool = False) -> SampleList:
    """PNG files of noise at the given (width, height) sizes, two classes, as a SampleList."""
    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h) in enumerate(sizes):
        array = rng.integers(0, 256, size=(h, w) if grey else (h, w, 3), dtype=np.uint8)
        path = root / f"{k:03d}.png"
        Image.fromarray(array).save(path)
        paths.append(str(path))
    return SampleList(paths, [k % 2 for k in range(len(sizes))])


@pytest.mark.parametrize(
    ("recipe", "options", "expected_size"),
    [
        ("reid", {}, (20, 10)),  # resized to the training size, as ReidTrainTransform's first step
        ("dml", {"crop": "random", "resize": 24}, (24, 24)),  # resized to resize x resize
        ("dml", {"resize": 24}, (24, 24)),  # mixed sizes: a resize x resize copy
    ],
)
def test_cache_holds_the_per_image_paths_decoded_pixels(tmp_path, recipe, options, expected_size) -> None:
    samples = write_images(tmp_path, [(31, 17), (40, 52), (10, 10), (64, 33)])
    transform = build_transform(recipe, True, (20, 10) if recipe == "reid" else (16, 16), **options)
    augment = BatchAugment(transform)
    cache = build_image_cache(samples, augment)
    assert cache.images.dtype == torch.uint8 and cache.images.shape == (4, 3, *expected_size)
    assert cache.nbytes == 4 * 3 * expected_size[0] * expected_size[1]
    np.testing.assert_array_equal(cache.sizes, [(31, 17), (40, 52), (10, 10), (64, 33)])
    height, width = expected_size
    for i in range(4):
        # what the per-image transform resizes before its random steps (same Pillow call): bit for bit
        expected = np.asarray(samples.load(i).resize((width, height), transform.resample)).transpose(2, 0, 1)
        np.testing.assert_array_equal(cache.images[i].numpy(), expected)


def test_common_size_is_kept_and_grey_images_take_one_channel(tmp_path) -> None:
    samples = write_images(tmp_path, [(28, 28)] * 5, grey=True)
    augment = BatchAugment(build_transform("dml", True, (16, 16), scale=(0.5, 1.0), resize=16))
    cache = build_image_cache(samples, augment, num_workers=1)
    assert cache.images.shape == (5, 1, 28, 28)
    for i in range(5):
        np.testing.assert_array_equal(cache.images[i, 0].numpy(), np.asarray(samples.load(i))[:, :, 0])
    # a colour image after grey ones: the cache keeps three channels
    (tmp_path / "c").mkdir()
    colour = write_images(tmp_path / "c", [(28, 28)], grey=False)
    mixed = samples.concat(colour)
    cache = build_image_cache(mixed, augment)
    assert cache.images.shape == (6, 3, 28, 28)
    np.testing.assert_array_equal(cache.images[5].numpy(), np.asarray(mixed.load(5)).transpose(2, 0, 1))
    np.testing.assert_array_equal(cache.images[0, 2].numpy(), np.asarray(mixed.load(0))[:, :, 2])


def test_unreadable_images_are_named_or_skipped(tmp_path) -> None:
    samples = write_images(tmp_path, [(12, 12)] * 4)
    Path(samples.paths[2]).write_bytes(b"not a png")
    augment = BatchAugment(build_transform("reid", True, (8, 8)))
    with pytest.raises(UnreadableImageError, match=r"002\.png"):
        build_image_cache(samples, augment)
    dataset = ImageDataset(samples, on_error="skip")
    cache = build_image_cache(samples, augment, on_error="skip", dataset=dataset)
    assert cache.valid.tolist() == [True, True, False, True]
    assert dataset.skipped_paths == [samples.paths[2]]
    batches = CachedBatches(cache, augment, samples)
    batch = batches.__getitems__([(0, 1), (2, 2), (3, 3)])
    assert batch["index"].tolist() == [0, 3] and batch["cached_uint8"].shape == (2, 3, 8, 8)
    assert batches.__getitems__([(2, 5)]) is None
    images, labels, _, index = batches.augment(batch)
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 1] and index.tolist() == [0, 3]


def test_a_cache_that_does_not_fit_is_refused_in_one_line() -> None:
    assert check_fits("memory", 10, (4, 5), 3, "cpu") == 600
    with pytest.raises(ValueError) as excinfo:
        check_fits("memory", 10**7, (1000, 1000), 3, "cpu")
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith("data.cache=memory: 10000000 training images")
    assert "27939.68 GiB" in message and "data.cache=none" in message


def test_config_rejects_an_unknown_cache_mode() -> None:
    with pytest.raises(ValueError, match=r"data\.cache must be one of none, memory, device, got 'disk'"):
        config_from_dict({"data": {"cache": "disk"}})
    with pytest.raises(ValueError, match=r"data\.cache"):
        RetrievalDataModule(cache="disk")


@pytest.fixture(scope="module")
def stripes():
    return _stripes_helpers()


def test_cached_batches_resume_mid_epoch_as_uninterrupted(stripes) -> None:
    splits = stripes.make_stripes_splits()
    options = {"recipe": "dml", "image_size": (24, 24), "transform_options": {"scale": (0.5, 1.0), "resize": 24}}
    whole = RetrievalDataModule(p=3, m=4, num_workers=0, cache="memory", splits=splits, seed=4, **options)
    loader = whole.train_dataloader()
    whole.train_sampler.set_epoch(1)
    uninterrupted = [whole.on_after_batch_transfer(b, 0) for b in loader]
    resumed_dm = RetrievalDataModule(p=3, m=4, num_workers=0, cache="memory", splits=splits, seed=4, **options)
    resumed_dm.resume_at(1, 3)
    resumed = [resumed_dm.on_after_batch_transfer(b, 0) for b in resumed_dm.train_dataloader()]
    assert len(resumed) == len(uninterrupted) - 3
    for a, b in zip(uninterrupted[3:], resumed, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])
    # and the files path serves the same augmented images for the same batches
    plain = RetrievalDataModule(p=3, m=4, num_workers=0, splits=splits, seed=4, **options)
    plain.resume_at(1, 3)
    first = next(iter(plain.train_dataloader()))
    assert torch.equal(first[0], resumed[0][0]) and torch.equal(first[3], resumed[0][3])
    assert isinstance(whole.train_sampler, PKSampler)


def test_training_from_the_cache_learns_the_weights_of_training_from_files(stripes, tmp_path, request) -> None:
    from centrum.training import train

    splits = stripes.make_stripes_splits()
    weights, losses = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only wait on each other on a shared machine
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    for mode in ("none", "memory", "device"):
        config = stripes.make_tiny_config("symm", max_epochs=2, checkpoint_every_n_steps=100)
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache=mode))
        result = train(config, tmp_path / mode, splits=splits, enable_progress_bar=False)
        weights[mode] = torch.load(result.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        losses[mode] = epoch_losses(result.run_dir)
    # the batch augmentation draws each image's parameters from its seed as the per-image path does, and
    # reproduces its pixels exactly here (a common image size): the same batches, the same weights
    for mode in ("memory", "device"):
        assert weights["none"].keys() == weights[mode].keys()
        for name, value in weights["none"].items():
            assert torch.equal(value, weights[mode][name]), (mode, name)
        assert losses[mode] == losses["none"]
        assert len(losses[mode]) == 2 and losses[mode][1] < losses[mode][0]  # and it learns
