"""SampleList back-ends and ImageDataset's handling of unreadable images, with and without DataLoader workers."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from centrum.data import (
    DatasetSplits,
    ImageDataset,
    PKSampler,
    Sample,
    SampleList,
    UnreadableImageError,
    build_transform,
    collate_skip_none,
    find_unreadable,
)


def make_files(tmp_path: Path, n: int = 6, broken: tuple[int, ...] = ()) -> SampleList:
    paths = []
    for i in range(n):
        path = tmp_path / f"{i:03d}.jpg"
        if i in broken:
            path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        else:
            Image.new("RGB", (8, 16), (i * 20, 0, 0)).save(path)
        paths.append(str(path))
    return SampleList(paths, np.arange(n) // 2, np.arange(n) % 3)


def test_file_backed_list(tmp_path: Path) -> None:
    samples = make_files(tmp_path)
    assert len(samples) == 6 and samples.num_classes == 3
    assert samples[1] == Sample(samples.paths[1], 0, 1)
    image = samples.load(2)
    assert image.mode == "RGB" and image.size == (8, 16)
    assert abs(int(np.asarray(image)[0, 0, 0]) - 40) <= 3  # JPEG is lossy
    part = samples[np.array([4, 1])]
    assert isinstance(part, SampleList) and part.labels.tolist() == [2, 0] and part.paths[0] == samples.paths[4]
    assert samples[::2].cameras.tolist() == [0, 2, 1]
    assert samples.subset(samples.labels == 1).paths == samples.paths[2:4]
    assert [s.label for s in samples] == [0, 0, 1, 1, 2, 2]


def test_list_is_immutable_and_validated(tmp_path: Path) -> None:
    samples = make_files(tmp_path)
    with pytest.raises(ValueError):
        samples.labels[0] = 5
    with pytest.raises(ValueError):
        samples.cameras[0] = 5
    with pytest.raises(ValueError, match=r"labels must have one entry per path"):
        SampleList(["a", "b"], [1])
    with pytest.raises(ValueError, match=r"labels must be integers"):
        SampleList(["a"], [0.5])
    with pytest.raises(IndexError):
        samples[6]


def test_array_backed_list_grey_to_rgb() -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    samples = SampleList(["x/0", "x/2"], [1, 2], images=images, rows=[0, 2])
    image = samples.load(1)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert np.array_equal(np.asarray(image), np.repeat(images[2][..., None], 3, axis=2))
    assert samples[1:].load(0).tobytes() == image.tobytes()  # subsets keep the row mapping
    assert samples.in_memory
    with pytest.raises(ValueError, match=r"uint8"):
        SampleList(["a"], [0], images=images.astype(np.float32))


def test_zip_backed_list_survives_pickling(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("L", (3, 2), 128).save(buffer, format="PNG")
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("set/alpha/character01/0001_01.png", buffer.getvalue())
    samples = SampleList([f"{tmp_path / 'a.zip'}::set/alpha/character01/0001_01.png"], [1], [1])
    assert samples.load(0).size == (3, 2)
    clone = pickle.loads(pickle.dumps(samples))
    assert clone.load(0).tobytes() == samples.load(0).tobytes()
    missing = SampleList([f"{tmp_path / 'a.zip'}::set/none.png"], [1])
    with pytest.raises(UnreadableImageError, match=r"none.png.*no such member"):
        missing.load(0)


def test_zip_backed_list_in_dataloader_workers(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        for i in range(8):
            buffer = io.BytesIO()
            Image.new("L", (4, 4), i * 30).save(buffer, format="PNG")
            archive.writestr(f"set/alpha/character01/0001_{i + 1:02d}.png", buffer.getvalue())
    paths = [f"{tmp_path / 'a.zip'}::set/alpha/character01/0001_{i + 1:02d}.png" for i in range(8)]
    samples = SampleList(paths, np.arange(8) // 2, np.arange(8) + 1)
    samples.load(0)  # an open handle in the parent must not be shared with forked workers
    loader = torch.utils.data.DataLoader(ImageDataset(samples), batch_size=2, num_workers=2)
    images = torch.cat([batch[0] for batch in loader])
    assert torch.allclose(images[:, 0, 0, 0], torch.arange(8) * 30 / 255.0)


def test_boxes_crop_and_concat(tmp_path: Path) -> None:
    samples = make_files(tmp_path, n=2)
    boxed = SampleList(samples.paths, samples.labels, boxes=np.array([[1, 2, 5, 10], [np.nan] * 4]))
    assert boxed.load(0).size == (4, 8) and boxed.load(1).size == (8, 16)
    both = boxed.concat(samples)
    assert len(both) == 4 and both.load(0).size == (4, 8) and both.load(2).size == (8, 16)


def test_unreadable_image_names_path(tmp_path: Path) -> None:
    samples = make_files(tmp_path, broken=(3,))
    with pytest.raises(UnreadableImageError, match=r"003\.jpg") as info:
        samples.load(3)
    assert isinstance(info.value, ValueError)
    gone = SampleList([str(tmp_path / "gone.jpg")], [0])
    with pytest.raises(UnreadableImageError, match=r"gone.jpg: file not found"):
        gone.load(0)
    assert [path for path, _ in find_unreadable(samples)] == [samples.paths[3]]


def test_image_dataset_items_and_raise_mode(tmp_path: Path) -> None:
    samples = make_files(tmp_path, broken=(3,))
    dataset = ImageDataset(samples, build_transform("reid", train=False, size=(16, 8)))
    image, label, camera, index = dataset[4]
    assert image.shape == (3, 16, 8) and image.dtype == torch.float32
    assert (label, camera, index) == (2, 1, 4)
    with pytest.raises(ValueError, match=r"cannot read image .*003\.jpg"):
        dataset[3]
    plain = ImageDataset(samples)[0][0]
    assert plain.min() >= 0 and plain.max() <= 1
    with pytest.raises(ValueError, match=r"on_error must be one of"):
        ImageDataset(samples, on_error="ignore")


def test_skip_mode_with_two_workers_reports_paths(tmp_path: Path) -> None:
    samples = make_files(tmp_path, n=8, broken=(1, 6))
    dataset = ImageDataset(samples, build_transform("reid", train=True, size=(16, 8)), on_error="skip")
    assert dataset[1] is None
    dataset.reset_skipped()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=PKSampler(samples.labels, p=2, m=2, seed=0),
        num_workers=2,
        collate_fn=collate_skip_none,
    )
    seen = []
    for batch in loader:
        if batch is None:
            continue
        images, labels, cameras, indices = batch
        assert images.shape[1:] == (3, 16, 8) and len(labels) == len(indices) == len(cameras)
        seen += indices.tolist()
    assert set(seen) == {0, 2, 3, 4, 5, 7}
    # the workers' skips are visible here, in the main process
    assert sorted(dataset.skipped_paths) == [samples.paths[1], samples.paths[6]]
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\)"):
        assert dataset.report_skipped() == 2


def test_collate_skip_none() -> None:
    item = (torch.zeros(3, 2, 2), 1, 0, 5)
    images, labels, _cameras, indices = collate_skip_none([None, item, item])
    assert images.shape == (2, 3, 2, 2) and labels.tolist() == [1, 1] and indices.tolist() == [5, 5]
    assert collate_skip_none([None, None]) is None


def test_dataset_splits_rejects_unknown_protocol(tmp_path: Path) -> None:
    samples = make_files(tmp_path, n=2)
    with pytest.raises(ValueError, match=r"protocol must be one of"):
        DatasetSplits("x", "retrieval", samples, samples, samples, 1)
    splits = DatasetSplits("x", "dml", samples, samples, samples, 1)
    assert splits.query_is_gallery and "test" in splits.summary()
