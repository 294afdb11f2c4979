"""Index files: loading never runs code, damaged files are one-line ValueErrors naming the file, class names
are saved with a per-image index, and files are written with normal permissions."""

from __future__ import annotations

import json
import os
import pathlib
import stat

import numpy as np
import pytest
import torch

from centrum.retrieval import CentroidIndex, EmbeddingIndex, load_index


class _CreatesAFile:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _saved(tmp_path) -> pathlib.Path:
    index = EmbeddingIndex(3)
    index.add(torch.randn(4, 3), labels=[0, 1, 1, 0], paths=["a.png", "b.png", "c.png", "d.png"])
    index.save(tmp_path / "idx")
    return tmp_path / "idx" / "index.npz"


def test_an_index_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    path = _saved(tmp_path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    marker = tmp_path / "pwned"
    arrays["paths"] = np.array([_CreatesAFile(marker)] * 4, dtype=object)
    np.savez(path, **arrays)  # np.savez pickles object arrays
    with pytest.raises(ValueError, match="is not a readable centrum index"):
        load_index(tmp_path / "idx")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "no header", "no vectors", "short labels"])
def test_damaged_index_files_are_value_errors_naming_the_file(tmp_path, damage):
    path = _saved(tmp_path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not a zip":
        path.write_text("hello")
    elif damage == "no header":
        del arrays["header"]
        np.savez(path, **arrays)
    elif damage == "no vectors":
        del arrays["vectors"]
        np.savez(path, **arrays)
    else:
        arrays["labels"] = arrays["labels"][:2]
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match=str(tmp_path / "idx")):
        load_index(tmp_path / "idx")


def test_class_names_round_trip_and_files_have_normal_permissions(tmp_path):
    index = EmbeddingIndex(3)
    index.add(torch.randn(4, 3), labels=[0, 1, 1, 0])
    index.class_names = {0: "cat", 1: "dog"}
    index.save(tmp_path / "idx")
    assert load_index(tmp_path / "idx").class_names == {0: "cat", 1: "dog"}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "idx" / "index.npz").stat().st_mode) == 0o666 & ~mask
    header = json.loads(np.load(tmp_path / "idx" / "index.npz")["header"].tobytes())
    assert header["class_names"] == {"0": "cat", "1": "dog"}


def test_fewer_entries_than_k_returns_them_all_without_padding():
    index = EmbeddingIndex(2, metric="euclidean")
    index.add(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), labels=[5, 6])
    r = index.search(torch.tensor([[0.0, 0.0]]), k=10)
    assert r.indices.tolist() == [[0, 1]] and r.labels.tolist() == [[5, 6]]
    np.testing.assert_allclose(r.distances, [[0.0, 5.0]], atol=1e-6)
    centroids = CentroidIndex(2, metric="euclidean")
    centroids.add(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([5, 6]))
    r = centroids.search(torch.tensor([[0.0, 0.0]]), k=10)
    assert r.labels.tolist() == [[5, 6]] and np.isfinite(r.distances).all()
