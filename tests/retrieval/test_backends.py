"""Index backends behind one interface: the exact ones (torch, faiss-flat, Qdrant local mode) agree with each
other and with a NumPy brute force, including the re-id exclusion; the approximate ones (faiss IVF-PQ, HNSW)
reach a recall@10 floor against exact; add/remove/centroid running means and persistence behave alike."""

from __future__ import annotations

import numpy as np
import pytest

from centrum.retrieval import load_index
from centrum.retrieval.backends import (
    CentroidStore,
    ImageIndex,
    QdrantCentroidStore,
    QdrantImageIndex,
    load_backend,
    open_backend,
)
from centrum.retrieval.backends.qdrant_backend import close_local

DIM = 32
IVFPQ_SMALL = {"pq_m": 16, "pq_bits": 5, "nlist": 16}  # small quantisers: seconds to train on a shared 2-core machine


@pytest.fixture(scope="module", autouse=True)
def _one_faiss_thread():
    """faiss's OpenMP threads spin-wait: on a shared, oversubscribed CPU one thread is much faster."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def gallery() -> dict[str, np.ndarray]:
    """200 classes x 10 images around class centres (like embeddings), 3 cameras, and 20 queries."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, DIM)).astype(np.float32)
    x = (np.repeat(centres, 10, 0) + 0.7 * rng.standard_normal((2000, DIM))).astype(np.float32)
    labels = np.repeat(np.arange(200), 10)
    cameras = np.tile(np.arange(10) % 3, 200)
    q_labels = rng.choice(200, 20, replace=False)
    queries = (centres[q_labels] + 0.7 * rng.standard_normal((20, DIM))).astype(np.float32)
    q_cameras = rng.integers(0, 3, 20)
    return {
        "x": x,
        "labels": labels,
        "cameras": cameras,
        "queries": queries,
        "q_labels": q_labels,
        "q_cameras": q_cameras,
    }


def make(name: str, tmp_path, kind: str = "image", metric: str = "cosine", **options):
    if name == "qdrant":  # Qdrant's local mode in memory; test_qdrant_local_mode_persists_and_reopens uses a folder
        options.setdefault("location", ":memory:")
    return open_backend(name, DIM, kind=kind, metric=metric, **options)


def filled(name, gallery, tmp_path, metric="cosine", **options):
    index = make(name, tmp_path, metric=metric, **options)
    paths = [f"img/{i}.png" for i in range(len(gallery["x"]))]
    ids = index.add(gallery["x"], gallery["labels"], paths=paths, cameras=gallery["cameras"])
    np.testing.assert_array_equal(ids, np.arange(len(gallery["x"])))
    return index


def brute_force(x, queries, k, metric, exclude=None):
    """Independent reference: full distance matrix in float64, stable sort (ties: lower row first)."""
    x, queries = x.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1.0 - queries @ x.T
    else:
        d = np.sqrt(((queries[:, None, :] - x[None]) ** 2).sum(-1))
    if exclude is not None:
        d[exclude] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


def assert_same_topk(a, b, tol=1e-4):
    """Same distances; same ids wherever the distance is not tied with a neighbour (ties may swap)."""
    np.testing.assert_allclose(a.distances, b.distances, atol=tol)
    gaps = np.diff(a.distances, axis=1)
    tied = np.zeros(a.ids.shape, bool)
    tied[:, 1:] |= gaps < tol
    tied[:, :-1] |= gaps < tol
    np.testing.assert_array_equal(a.ids[~tied], b.ids[~tied])


@pytest.fixture
def qdrant_cleanup(tmp_path):
    yield
    for sub in tmp_path.glob("qdrant-*"):
        close_local(sub)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_backends_equal_brute_force_with_and_without_reid_rule(gallery, tmp_path, metric, qdrant_cleanup):
    g = gallery
    reid = (g["labels"][None] == g["q_labels"][:, None]) & (g["cameras"][None] == g["q_cameras"][:, None])
    ref_ids, ref_d = brute_force(g["x"], g["queries"], 10, metric)
    ref_ids_x, ref_d_x = brute_force(g["x"], g["queries"], 10, metric, exclude=reid)
    assert reid[np.arange(20)[:, None], brute_force(g["x"], g["queries"], 10, metric)[0]].any()  # rule matters
    results = {}
    for name in ("torch", "faiss-flat", "qdrant"):
        index = filled(name, g, tmp_path, metric)
        assert isinstance(index, ImageIndex)
        plain = index.search(g["queries"], 10)
        ruled = index.search(g["queries"], 10, query_labels=g["q_labels"], query_cameras=g["q_cameras"])
        np.testing.assert_allclose(plain.distances, ref_d, atol=1e-4)
        np.testing.assert_array_equal(plain.ids, ref_ids)
        np.testing.assert_allclose(ruled.distances, ref_d_x, atol=1e-4)
        np.testing.assert_array_equal(ruled.ids, ref_ids_x)
        assert not reid[np.arange(20)[:, None], ruled.ids].any()
        np.testing.assert_array_equal(ruled.labels, g["labels"][ruled.ids])
        np.testing.assert_array_equal(ruled.cameras, g["cameras"][ruled.ids])
        assert ruled.paths[0, 0] == f"img/{ruled.ids[0, 0]}.png"
        results[name] = ruled
    assert_same_topk(results["torch"], results["faiss-flat"])
    assert_same_topk(results["torch"], results["qdrant"])


def test_ties_are_broken_alike_by_the_exact_backends(tmp_path, qdrant_cleanup):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((1, DIM)).astype(np.float32)
    x = np.concatenate([rng.standard_normal((20, DIM)).astype(np.float32), np.repeat(base, 6, 0)])
    out = []
    for name in ("torch", "faiss-flat", "qdrant"):
        index = make(name, tmp_path, metric="euclidean")
        index.add(x, np.arange(26))
        hits = index.search(base, 4)
        np.testing.assert_allclose(hits.distances, 0.0, atol=1e-2)  # sqrt of a rounding error
        assert set(hits.ids[0]) <= set(range(20, 26))
        assert list(hits.ids[0]) == sorted(hits.ids[0])  # equal distances: lower id first
        out.append(hits.ids)
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize(("name", "options", "floor"), [("faiss-hnsw", {}, 0.95), ("faiss-ivfpq", IVFPQ_SMALL, 0.8)])
def test_approximate_backends_recall_at_10_against_exact(gallery, tmp_path, name, options, floor):
    g = gallery
    exact = filled("torch", g, tmp_path).search(g["queries"], 10).ids
    approx = filled(name, g, tmp_path, **options).search(g["queries"], 10).ids
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact, strict=True)])
    print(f"{name} recall@10 vs exact: {recall:.3f} (floor {floor})")
    assert recall >= floor


@pytest.mark.parametrize("name", ["torch", "faiss-flat", "faiss-hnsw", "faiss-ivfpq", "qdrant"])
def test_add_remove_and_counts(gallery, tmp_path, name, qdrant_cleanup):
    g = gallery
    options = IVFPQ_SMALL if name == "faiss-ivfpq" else {}
    index = filled(name, g, tmp_path, **options)
    assert len(index) == 2000 and index.class_counts() == {c: 10 for c in range(200)}
    more = index.add(g["x"][:3], [7, 7, 8])
    np.testing.assert_array_equal(more, [2000, 2001, 2002])
    with pytest.raises(ValueError, match="already"):
        index.add(g["x"][:1], [1], ids=[5])
    assert index.add(g["x"][:1], [9], ids=[10_000])[0] == 10_000
    first = index.search(g["queries"][:5], 3).ids[:, 0]
    assert index.remove([*first.tolist(), 123_456]) == len(set(first.tolist()))
    left = index.class_counts()[int(g["q_labels"][0])]
    assert index.remove_class(int(g["q_labels"][0])) == left >= 9
    assert index.remove_class(999) == 0
    assert len(index) == 2000 + 3 + 1 - len(set(first.tolist())) - left
    hits = index.search(g["queries"][:5], 50)
    assert not np.isin(hits.ids, first).any()
    assert not (hits.labels == g["q_labels"][0]).any()
    assert index.class_counts()[7] == 12
    assert index.add(g["x"][:1], [1])[0] == 10_001  # ids are never reused


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_centroid_running_means_agree_across_backends(gallery, tmp_path, metric, qdrant_cleanup):
    g = gallery
    x, labels = g["x"][:600], g["labels"][:600]
    v = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    expected = np.stack([v[labels == c].astype(np.float64).mean(0) for c in range(60)])
    searches = []
    for name in ("torch", "faiss-flat", "qdrant"):
        store = make(name, tmp_path, kind="centroid", metric=metric)
        assert isinstance(store, CentroidStore)
        store.add(x[::2], labels[::2])  # enrol in two batches: a running mean
        store.add(x[1::2], labels[1::2])
        got_labels, means = store.centroids()
        np.testing.assert_array_equal(got_labels, np.arange(60))
        np.testing.assert_allclose(means, expected, atol=1e-5)
        assert store.class_counts() == {c: 10 for c in range(60)}
        hits = store.search(g["queries"], 5)
        ref = expected / np.linalg.norm(expected, axis=1, keepdims=True) if metric == "cosine" else expected
        ref_ids, ref_d = brute_force(ref, g["queries"], 5, metric)
        np.testing.assert_array_equal(hits.ids, ref_ids)
        np.testing.assert_allclose(hits.distances, ref_d, atol=1e-4)
        assert store.remove_class(3) == 10 and store.remove_class(3) == 0 and len(store) == 59
        assert 3 not in store.search(g["queries"], 59).labels
        searches.append(hits)
    assert_same_topk(searches[0], searches[1])
    assert_same_topk(searches[0], searches[2])


@pytest.mark.parametrize("name", ["torch", "faiss-flat", "faiss-hnsw", "faiss-ivfpq"])
@pytest.mark.parametrize("kind", ["image", "centroid"])
def test_save_load_round_trip(gallery, tmp_path, name, kind):
    g = gallery
    options = IVFPQ_SMALL if name == "faiss-ivfpq" else {}
    index = make(name, tmp_path, kind=kind, **options)
    if kind == "image":
        index.add(g["x"], g["labels"], cameras=g["cameras"])
        index.remove_class(5)
    else:
        index.add(g["x"], g["labels"])
    before = index.search(g["queries"], 10)
    index.save(tmp_path / "saved")
    again = load_backend(tmp_path / "saved")
    after = again.search(g["queries"], 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.distances, before.distances, atol=1e-6)
    assert again.class_counts() == index.class_counts()
    if kind == "image":
        assert again.add(g["x"][:1], [1])[0] == 2000
    else:
        again.add(g["x"][:10], g["labels"][:10])
        assert again.class_counts()[0] == 20
    if name == "torch":  # the wrapped index stays readable by the classic loader
        assert len(load_index(tmp_path / "saved")) == len(index)


def test_qdrant_local_mode_persists_and_reopens(gallery, tmp_path):
    g = gallery
    folder = tmp_path / "qdrant-store"
    images = QdrantImageIndex(DIM, path=folder)
    centroids = QdrantCentroidStore(DIM, path=folder)  # same folder, its own collection
    assert type(images.client._client).__name__ == "QdrantLocal"
    images.add(g["x"][:500], g["labels"][:500], cameras=g["cameras"][:500])
    centroids.add(g["x"][:500], g["labels"][:500])
    before = images.search(g["queries"], 5, query_labels=g["q_labels"], query_cameras=g["q_cameras"])
    before_c = centroids.search(g["queries"], 5)
    images.close()
    assert (folder / "collection" / "centrum_images").is_dir()
    assert (folder / "collection" / "centrum_centroids").is_dir()
    images = QdrantImageIndex(DIM, path=folder)
    centroids = QdrantCentroidStore(DIM, path=folder)
    assert len(images) == 500 and len(centroids) == 50
    after = images.search(g["queries"], 5, query_labels=g["q_labels"], query_cameras=g["q_cameras"])
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(centroids.search(g["queries"], 5).ids, before_c.ids)
    assert images.add(g["x"][:1], [0])[0] == 500  # the id counter continues after the stored ids
    with pytest.raises(ValueError, match="holds 32-d"):
        QdrantImageIndex(16, path=folder)
    images.close()


def test_bad_input_is_refused_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="unknown index backend 'annoy'"):
        open_backend("annoy", DIM)
    with pytest.raises(ValueError, match="unknown metric"):
        open_backend("torch", DIM, metric="hamming")
    with pytest.raises(ValueError, match="exactly one of path=, url=, location="):
        open_backend("qdrant", DIM)
    index = open_backend("faiss-flat", DIM)
    with pytest.raises(ValueError, match=f"N x {DIM}"):
        index.add(np.zeros((3, DIM + 1), np.float32), [0, 1, 2])
    with pytest.raises(ValueError, match="labels must have 3 entries"):
        index.add(np.zeros((3, DIM), np.float32), [0, 1])
    with pytest.raises(ValueError, match="non-negative"):
        open_backend("torch", DIM, kind="centroid").add(np.ones((1, DIM), np.float32), [-1])
    with pytest.raises(ValueError, match="needs both"):
        index.search(np.ones((1, DIM), np.float32), 1, query_labels=[0])
    with pytest.raises(FileNotFoundError, match=r"backend\.json"):
        load_backend(tmp_path)
    assert index.search(np.ones((2, DIM), np.float32), 3).ids.tolist() == [[-1] * 3] * 2
