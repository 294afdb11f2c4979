"""k-reciprocal re-ranking, alpha-QE and DBA against dense references written from their definitions."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch

from centrum.cli import main
from centrum.evaluation import (
    alpha_query_expansion,
    database_augmentation,
    evaluate_protocol,
    k_reciprocal_distances,
    postprocess_arrays,
    product_metrics,
    reid_metrics,
)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load("_reference")
rr = _load("_rerank_reference")


def _integer_sets(seed, nq=14, ng=46, dim=3, spread=2):
    """Small-integer embeddings: exact float32 distances, many exact ties and duplicated points."""
    gen = np.random.default_rng(seed)
    x = gen.integers(-spread, spread + 1, size=(nq + ng, dim)).astype(np.float32)
    x[nq + 3] = x[2]  # a gallery duplicate of a query
    x[nq + 5] = x[nq + 4]  # two identical gallery items
    return x[:nq], x[nq:]


def _assert_same(ours, expected, strict_ranking=True):
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-6
    ours_rank = np.argsort(ours, axis=1, kind="stable")
    expected_rank = np.argsort(expected, axis=1, kind="stable")
    if strict_ranking:
        np.testing.assert_array_equal(ours_rank, expected_rank)
    else:  # pure Jaccard (lambda = 0): mathematically tied values may differ in the last bit
        reordered = np.take_along_axis(expected, ours_rank, 1)
        assert (np.diff(reordered, axis=1) >= -1e-12).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("k1", "k2", "lam"),
    [(20, 6, 0.3), (3, 2, 0.5), (5, 1, 0.3), (1, 1, 0.9), (4, 3, 1.0), (80, 6, 0.3)],  # 80 > N: every item
)
def test_k_reciprocal_equals_dense_reference_with_ties(seed, k1, k2, lam):
    q, g = _integer_sets(seed)
    expected = rr.dense_k_reciprocal(q, g, k1, k2, lam)
    for chunk in (None, 5):
        ours = k_reciprocal_distances(q, g, k1=k1, k2=k2, lambda_value=lam, chunk_size=chunk)
        assert ours.shape == expected.shape
        _assert_same(ours.dense(), expected)


def test_k_reciprocal_pure_jaccard_and_k_larger_than_a_class():
    # 6 classes of 4 points each around separated centres: k1 = 10 > class size, so the sets cross classes
    gen = np.random.default_rng(7)
    centres = gen.integers(-20, 21, size=(6, 4))
    labels = np.repeat(np.arange(6), 4)
    x = (centres[labels] + gen.integers(-1, 2, size=(24, 4))).astype(np.float32)
    q, g = x[::4], np.delete(x, np.s_[::4], axis=0)
    for lam, strict in ((0.3, True), (0.0, False)):
        expected = rr.dense_k_reciprocal(q, g, 10, 3, lam)
        _assert_same(k_reciprocal_distances(q, g, k1=10, k2=3, lambda_value=lam).dense(), expected, strict)
    # re-ranking brings every query's own class first here, as it should on separated classes
    d = k_reciprocal_distances(q, g, k1=10, k2=3).dense().numpy()
    nearest = np.argsort(d, axis=1, kind="stable")[:, :3]
    assert (np.delete(labels, np.s_[::4])[nearest] == labels[::4][:, None]).all()


def test_k_reciprocal_cosine_on_float_data():
    gen = np.random.default_rng(3)
    q, g = gen.normal(size=(12, 8)).astype(np.float32), gen.normal(size=(40, 8)).astype(np.float32)
    expected = rr.dense_k_reciprocal(q, g, 6, 3, 0.3, normalize=True)
    _assert_same(k_reciprocal_distances(q, g, k1=6, k2=3, metric="cosine", chunk_size=4).dense(), expected)


def test_reranked_blocks_feed_the_protocols_like_the_dense_matrix():
    q, g = _integer_sets(11, nq=20, ng=60)
    gen = np.random.default_rng(11)
    ql, gl = gen.integers(0, 8, 20), gen.integers(0, 8, 60)
    qc, gc = gen.integers(0, 3, 20), gen.integers(0, 3, 60)
    dense = rr.dense_k_reciprocal(q, g, 8, 3, 0.3)
    blocks = k_reciprocal_distances(q, g, k1=8, k2=3, metric="euclidean")
    ours = reid_metrics(query_labels=ql, gallery_labels=gl, query_cameras=qc, gallery_cameras=gc, distances=blocks)
    expected = ref.reid_reference(dense, ql, gl, qc, gc)
    for key in ("mAP", "mINP", "Rank-1", "Rank-5", "num_valid_queries"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-9), key
    assert product_metrics(query_labels=ql, gallery_labels=gl, distances=blocks, chunk_size=3) == product_metrics(
        query_labels=ql, gallery_labels=gl, distances=dense
    )


def test_rerank_input_errors():
    q, g = _integer_sets(0)
    with pytest.raises(ValueError, match="not 'dot'"):
        k_reciprocal_distances(q, g, metric="dot")
    with pytest.raises(ValueError, match="k1 and k2 must be positive"):
        k_reciprocal_distances(q, g, k1=0)
    with pytest.raises(ValueError, match="lambda_value must lie in"):
        k_reciprocal_distances(q, g, lambda_value=1.5)
    with pytest.raises(ValueError, match="gallery has 2-d"):
        k_reciprocal_distances(q, g[:, :2])
    with pytest.raises(ValueError, match="gallery_labels has 3 entries"):
        reid_metrics(
            query_labels=np.zeros(14, int), gallery_labels=np.zeros(3, int), distances=k_reciprocal_distances(q, g)
        )


def test_query_expansion_hand_computed():
    query = np.array([[1.0, 0.0]], np.float32)
    gallery = np.array([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    # k = 2 nearest by cosine: g0 (cos 0.6) then g1 (cos 0): alpha = 1 -> q + 0.6 g0 + 0 g1
    total = np.array([1.0 + 0.36, 0.48])
    out = alpha_query_expansion(query, gallery, k=2, alpha=1.0).numpy()
    np.testing.assert_allclose(out[0], total / np.linalg.norm(total), atol=1e-6)
    # alpha = 0: the plain average of the query and both neighbours (direction of q + g0 + g1)
    total = np.array([1.6, 1.8])
    np.testing.assert_allclose(
        alpha_query_expansion(query, gallery, k=2, alpha=0.0).numpy()[0], total / np.linalg.norm(total), atol=1e-6
    )


@pytest.mark.parametrize(("k", "alpha"), [(1, 0.0), (3, 3.0), (100, 1.0)])
def test_query_expansion_and_dba_equal_dense_reference(k, alpha):
    gen = np.random.default_rng(5)
    q, g = gen.normal(size=(20, 6)).astype(np.float32), gen.normal(size=(45, 6)).astype(np.float32)
    g[7] = g[3]  # a duplicate: equal similarities, ties by index
    np.testing.assert_allclose(
        alpha_query_expansion(q, g, k=k, alpha=alpha, chunk_size=6).numpy(),
        rr.dense_expansion(q, g, k, alpha),
        atol=1e-6,
    )
    expected = rr.dense_expansion(g, g, k, alpha, exclude_self=True)
    np.testing.assert_allclose(database_augmentation(g, k=k, alpha=alpha, chunk_size=7).numpy(), expected, atol=1e-6)
    same = alpha_query_expansion(g, None, k=k, alpha=alpha, same_set=True).numpy()
    np.testing.assert_allclose(same, expected, atol=1e-6)


def test_postprocess_arrays_order_and_errors():
    q, g = _integer_sets(2)
    gen = np.random.default_rng(2)
    arrays = {
        "query": q,
        "gallery": g,
        "query_labels": gen.integers(0, 5, 14),
        "gallery_labels": gen.integers(0, 5, 46),
    }
    out, label = postprocess_arrays(
        "products", arrays, rerank="k-reciprocal", query_expansion=["alpha-qe", "dba"], k1=6
    )
    assert label == "dba + alpha-qe + k-reciprocal"
    g_dba = database_augmentation(g)
    q_qe = alpha_query_expansion(q, g_dba)
    expected = k_reciprocal_distances(q_qe, g_dba, k1=6, metric="cosine").dense()
    assert torch.equal(out["distances"].dense(), expected)  # DBA, then alpha-QE, then re-ranking
    assert evaluate_protocol("products", out) == product_metrics(
        query_labels=arrays["query_labels"], gallery_labels=arrays["gallery_labels"], distances=expected
    )
    _, label = postprocess_arrays("products-centroids", arrays, rerank="k-reciprocal")
    assert label == ""  # re-ranked distances cannot be averaged into centroids
    with pytest.raises(ValueError, match="only --query-expansion dba applies"):
        postprocess_arrays("dml", {"embeddings": g, "labels": arrays["gallery_labels"]}, rerank="k-reciprocal")
    with pytest.raises(ValueError, match="unknown query expansion"):
        postprocess_arrays("reid", arrays, query_expansion=["qe"])


def test_cli_prints_postprocessed_rows_beside_the_plain_ones(tmp_path, capsys):
    gen = np.random.default_rng(4)
    centres = gen.normal(size=(10, 16))
    ql, gl = gen.integers(0, 10, 30), np.repeat(np.arange(10), 6)
    q = (centres[ql] + 0.7 * gen.normal(size=(30, 16))).astype(np.float32)
    g = (centres[gl] + 0.7 * gen.normal(size=(60, 16))).astype(np.float32)
    qc, gc = np.zeros(30, int), np.ones(60, int)
    path = tmp_path / "e.npz"
    np.savez(path, query=q, gallery=g, query_labels=ql, gallery_labels=gl, query_cameras=qc, gallery_cameras=gc)
    out = tmp_path / "m.json"
    args = ["evaluate", "--embeddings", str(path), "--protocol", "reid", "--json", str(out)]
    assert main([*args, "--rerank", "k-reciprocal", "--k1", "8", "--k2", "3", "--query-expansion", "dba"]) == 0
    printed = capsys.readouterr().out
    assert "reid + dba + k-reciprocal" in printed
    results = json.loads(out.read_text())
    g_dba = database_augmentation(g)
    blocks = k_reciprocal_distances(q, g_dba, k1=8, k2=3, metric="cosine")
    expected = reid_metrics(query_labels=ql, gallery_labels=gl, query_cameras=qc, gallery_cameras=gc, distances=blocks)
    assert results["reid + dba + k-reciprocal"]["mAP"] == pytest.approx(expected["mAP"])
    assert results["reid"]["mAP"] == pytest.approx(reid_metrics(q, g, ql, gl, qc, gc)["mAP"])
    np.savez(tmp_path / "d.npz", embeddings=g, labels=gl)
    assert (
        main(
            ["evaluate", "--embeddings", str(tmp_path / "d.npz"), "--protocol", "dml", "--query-expansion", "alpha-qe"]
        )
        == 2
    )
    assert "only --query-expansion dba applies" in capsys.readouterr().err
