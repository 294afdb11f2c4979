"""EmbeddingIndex and CentroidIndex: exact search against brute force, faiss agreement and recall,
running means, removal, atomic save / load with version and dimension checks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from centrum.distances import pairwise_distance
from centrum.retrieval import CentroidIndex, EmbeddingIndex, _storage, load_index


def _brute_force(queries, vectors, k, metric):
    d = pairwise_distance(queries, vectors, metric)
    return torch.sort(d, dim=1, stable=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "squared_euclidean", "dot"])
def test_torch_search_equals_brute_force_across_segments(metric, monkeypatch):
    from centrum.retrieval import index as index_module

    monkeypatch.setattr(index_module, "MIN_SEGMENT_ROWS", 20)  # several segments, several query blocks
    monkeypatch.setattr(index_module, "SEARCH_BLOCK", 700)
    x, q = torch.randn(130, 6), torch.randn(17, 6)
    index = EmbeddingIndex(6, metric=metric)
    for part in torch.split(x, 25):
        index.add(part)
    assert len(index) == 130 and len(index._segments) > 1
    result = index.search(q, k=7)
    d, i = _brute_force(q, x, 7, metric)
    np.testing.assert_array_equal(result.indices, i[:, :7].numpy())
    np.testing.assert_allclose(result.distances, d[:, :7].numpy(), atol=1e-5)


def test_metadata_and_short_results():
    index = EmbeddingIndex(3, metric="euclidean")
    index.add(torch.eye(3), labels=[7, 8, 9], paths=["a.jpg", "b.jpg", "c.jpg"], cameras=[1, 2, 3])
    index.add(torch.ones(1, 3) * 5)  # no metadata: label -1, path ""
    r = index.search(torch.tensor([[1.0, 0.0, 0.0]]), k=6)
    assert r.indices[0, :4].tolist()[0] == 0 and r.labels[0, 0] == 7 and r.paths[0, 0] == "a.jpg"
    assert r.indices.shape == (1, 4) and np.isfinite(r.distances).all()  # k=6 > 4 entries: all 4, no padding
    assert r.labels[0, 3] == -1 and r.paths[0, 3] == ""
    assert index.cameras.tolist() == [1, 2, 3, -1]


def test_bad_inputs():
    index = EmbeddingIndex(4)
    with pytest.raises(ValueError, match="index is empty"):
        index.search(torch.randn(1, 4))
    with pytest.raises(ValueError, match="embeddings are 3-d but the index holds 4-d"):
        index.add(torch.randn(2, 3))
    with pytest.raises(ValueError, match="labels has 1 entries but embeddings has 2 rows"):
        index.add(torch.randn(2, 4), labels=[1])
    with pytest.raises(ValueError, match="paths has 3 entries"):
        index.add(torch.randn(2, 4), paths=["a", "b", "c"])
    with pytest.raises(ValueError, match="unknown backend"):
        EmbeddingIndex(4, backend="annoy")
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        index.add(torch.tensor([[0.0, float("nan"), 0, 0]]))


def test_cosine_torch_matches_faiss_flat():
    pytest.importorskip("faiss")
    x, q = torch.randn(300, 16), torch.randn(20, 16)
    results = []
    for backend in ("torch", "faiss-flat"):
        index = EmbeddingIndex(16, metric="cosine", backend=backend)
        index.add(x)
        results.append(index.search(q, k=10))
    np.testing.assert_array_equal(results[0].indices, results[1].indices)
    np.testing.assert_allclose(results[0].distances, results[1].distances, atol=1e-5)
    e = EmbeddingIndex(16, metric="euclidean", backend="faiss-flat")
    e.add(x)
    d, _ = _brute_force(q, x, 10, "euclidean")
    np.testing.assert_allclose(e.search(q, k=10).distances, d[:, :10].numpy(), atol=1e-4)


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
def test_approximate_backends_recall_and_round_trip(backend, tmp_path):
    pytest.importorskip("faiss")
    centres = torch.randn(50, 32)
    x = centres[torch.arange(2000) % 50] + 0.5 * torch.randn(2000, 32)
    q = x[:100] + 0.05 * torch.randn(100, 32)
    exact = EmbeddingIndex(32)
    exact.add(x)
    approx = EmbeddingIndex(32, backend=backend, nprobe=8)
    approx.add(x[:1500])
    approx.search(q, k=1)  # builds (and trains) the faiss structure, then more vectors arrive
    approx.add(x[1500:])
    truth, got = exact.search(q, k=10).indices, approx.search(q, k=10).indices
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got, strict=True)])
    assert recall >= 0.9
    approx.save(tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.backend == backend and len(loaded) == 2000
    np.testing.assert_array_equal(loaded.search(q, k=10).indices, got)


def test_save_load_round_trip_and_checks(tmp_path):
    index = EmbeddingIndex(5, metric="euclidean")
    index.add(
        torch.randn(12, 5),
        labels=np.arange(12),
        paths=[f"img/{i}.png" for i in range(12)],
        cameras=np.ones(12, dtype=np.int64),
    )
    index.save(tmp_path / "idx")
    assert sorted(os.listdir(tmp_path / "idx")) == ["index.npz"]  # no temporary file left behind
    loaded = EmbeddingIndex.load(tmp_path / "idx", dim=5)
    q = torch.randn(3, 5)
    a, b = index.search(q, 4), loaded.search(q, 4)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert b.paths.tolist() == a.paths.tolist() and loaded.metric == "euclidean"
    with pytest.raises(ValueError, match="holds 5-d embeddings but 8-d were expected"):
        load_index(tmp_path / "idx", dim=8)
    with pytest.raises(FileNotFoundError, match="no index at"):
        load_index(tmp_path / "missing")
    with pytest.raises(ValueError, match="not 'centroid'"):
        CentroidIndex.load(tmp_path / "idx")
    header, arrays = _storage.load_arrays(tmp_path / "idx")
    header["format_version"] = 99
    _storage.save_arrays(tmp_path / "future", {k: v for k, v in header.items() if k != "format_version"}, arrays)
    path = tmp_path / "future" / "index.npz"
    with np.load(path) as data:
        content = {name: data[name] for name in data.files}
    content["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **content)
    with pytest.raises(ValueError, match="format version 99, but this centrum reads version 1"):
        load_index(tmp_path / "future")


def test_crash_during_save_keeps_the_previous_index(tmp_path, monkeypatch):
    index = EmbeddingIndex(3)
    index.add(torch.randn(4, 3))
    index.save(tmp_path)
    index.add(torch.randn(4, 3))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_storage.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path)
    assert os.listdir(tmp_path) == ["index.npz"]
    assert len(load_index(tmp_path)) == 4


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_centroid_index_running_mean_equals_batch_mean(metric):
    x, labels = torch.randn(60, 8).double().float(), torch.randint(0, 6, (60,))
    index = CentroidIndex(8, metric=metric)
    for part, lab in zip(torch.split(x, 7), torch.split(labels, 7), strict=True):
        index.add(part, lab)
    source = torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x
    for row, label in enumerate(index.labels.tolist()):
        expected = source[labels == label].double().mean(0).float()
        torch.testing.assert_close(index.centroids[row], expected, atol=1e-6, rtol=0)
        assert index.counts[row] == int((labels == label).sum())
    q = torch.randn(5, 8)
    result = index.search(q, k=3)
    cents = index.centroids
    d = pairwise_distance(q, cents, metric)
    np.testing.assert_array_equal(result.labels, index.labels[torch.sort(d, dim=1, stable=True).indices[:, :3]].numpy())
    np.testing.assert_allclose(result.distances, torch.sort(d, 1).values[:, :3].numpy(), atol=1e-5)


def test_centroid_index_remove_save_load(tmp_path):
    index = CentroidIndex(4, metric="euclidean")
    index.add(torch.tensor([[0.0, 0, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0], [0, 12, 0, 0]]), torch.tensor([1, 2, 3, 3]))
    index.class_names[3] = "mug"
    index.remove(1)
    assert 1 not in index and len(index) == 2
    r = index.search(torch.tensor([[0.0, 0.5, 0, 0]]), k=3)
    assert r.labels.tolist() == [
        [2, 3]
    ]  # k=3 > 2 classes: both, no padding; |(0,.5)-(10,0)| = 10.01 < |(0,.5)-(0,11)| = 10.5
    with pytest.raises(ValueError, match="label 1 is not in the index"):
        index.remove(1)
    index.add(torch.tensor([[0.0, 14, 0, 0]]), torch.tensor([3]))  # running mean: (10 + 12 + 14) / 3
    row = index.labels.tolist().index(3)
    assert index.centroids[row].tolist() == [0.0, 12.0, 0.0, 0.0] and index.counts[row] == 3
    index.save(tmp_path)
    loaded = load_index(tmp_path, dim=4)
    assert isinstance(loaded, CentroidIndex) and loaded.class_names == {3: "mug"}
    torch.testing.assert_close(loaded.centroids, index.centroids)
    loaded.add(torch.tensor([[0.0, 0, 8, 0]]), torch.tensor([5]))
    assert len(loaded) == 3 and 5 in loaded


@pytest.mark.parametrize("backend", ["torch", "faiss-flat"])
def test_cosine_distance_of_a_point_to_itself_is_never_negative(backend):
    # seed 0 gives unit rows whose rounded self inner product exceeds 1 (1 - cos was -3.6e-7: printed "-0.0000")
    if backend != "torch":
        pytest.importorskip("faiss")
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    index = EmbeddingIndex(128, metric="cosine", backend=backend)
    index.add(x, torch.zeros(64, dtype=torch.long))
    result = index.search(x, k=3)
    assert np.asarray(result.distances).min() >= 0.0
    assert (np.asarray(result.distances)[:, 0] < 1e-5).all()


def test_engine_scores_as_cosine_distances_are_never_negative():
    from centrum.retrieval.backends.base import to_distance

    assert to_distance(np.array([1.0000004, 0.5, -1.0], dtype=np.float32), "cosine").tolist() == [0.0, 0.5, 2.0]
