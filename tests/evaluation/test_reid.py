"""Re-identification protocols against Python-loop references, and the faults of the authors' evaluation."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import torch

from centrum.evaluation import reid_centroid_metrics, reid_metrics

_spec = importlib.util.spec_from_file_location("_reference", pathlib.Path(__file__).with_name("_reference.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def _reid_data(seed, nq=40, ng=150, dim=4, ids=40, cams=3, integer=True):
    gen = torch.Generator().manual_seed(seed)
    if integer:  # small integers: many exactly tied distances
        q = torch.randint(0, 3, (nq, dim), generator=gen).float()
        g = torch.randint(0, 3, (ng, dim), generator=gen).float()
    else:
        q, g = torch.randn(nq, dim, generator=gen), torch.randn(ng, dim, generator=gen)
    ql = torch.randint(1, ids, (nq,), generator=gen)
    gl = torch.randint(0, ids + 3, (ng,), generator=gen)  # ids >= `ids` never queried: distractors
    qc = torch.randint(0, cams, (nq,), generator=gen)
    gc = torch.randint(0, cams, (ng,), generator=gen)
    return q, g, ql, gl, qc, gc


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean"])
def test_reid_matches_loop_reference_with_ties(seed, metric):
    q, g, ql, gl, qc, gc = _reid_data(seed)
    ours = reid_metrics(q, g, ql, gl, qc, gc, metric=metric, chunk_size=7)
    expected = ref.reid_reference(ref.distance_matrix(q, g, metric), ql.numpy(), gl.numpy(), qc.numpy(), gc.numpy())
    assert ours["num_valid_queries"] == expected["num_valid_queries"] < 40  # some queries have no match
    for key in ("mAP", "mINP", "Rank-1", "Rank-5", "Rank-10", "Rank-20"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-6), key
    np.testing.assert_allclose(ours["cmc"], expected["cmc"], atol=1e-6)
    assert len(ours["cmc"]) == 50


def test_reid_cosine_matches_reference_and_is_chunk_invariant():
    q, g, ql, gl, qc, gc = _reid_data(5, dim=16, integer=False)
    expected = ref.reid_reference(ref.distance_matrix(q, g, "cosine"), ql.numpy(), gl.numpy(), qc.numpy(), gc.numpy())
    for chunk in (1, 13, None):
        ours = reid_metrics(q.numpy(), g.numpy(), ql.numpy(), gl.numpy(), qc.numpy(), gc.numpy(), chunk_size=chunk)
        assert ours["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
        assert ours["mINP"] == pytest.approx(expected["mINP"], abs=1e-6)
        np.testing.assert_allclose(ours["cmc"], expected["cmc"], atol=1e-6)


def test_reid_hand_computed():
    # one query (id 1, camera 0); gallery by distance: [id1 cam0 (removed), id2, id1 cam1, id3, id1 cam2]
    q = torch.tensor([[0.0]])
    g = torch.tensor([[0.1], [0.2], [0.3], [0.4], [0.5]])
    out = reid_metrics(q, g, [1], [1, 2, 1, 3, 1], [0], [0, 0, 1, 1, 2], metric="euclidean", max_rank=4)
    # kept ranking: id2, id1, id3, id1 -> hits at 2 and 4: AP = (1/2 + 2/4) / 2, INP = 2/4
    assert out["mAP"] == pytest.approx(0.5)
    assert out["mINP"] == pytest.approx(0.5)
    assert out["Rank-1"] == 0.0 and out["Rank-5"] == 1.0
    assert out["cmc"] == [0.0, 1.0, 1.0, 1.0]


def test_reid_without_cameras_keeps_same_camera_matches():
    q = torch.tensor([[0.0]])
    g = torch.tensor([[0.1], [0.2]])
    assert reid_metrics(q, g, [1], [1, 2], metric="euclidean")["Rank-1"] == 1.0
    with pytest.raises(ValueError, match="no valid query"):
        reid_metrics(q, g, [1], [1, 2], [0], [0, 0], metric="euclidean")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_reid_centroids_match_loop_reference(seed, metric):
    q, g, ql, gl, qc, gc = _reid_data(seed, dim=8, integer=False)
    for distractors in ((), (0,)):
        ours = reid_centroid_metrics(q, g, ql, gl, qc, gc, metric=metric, chunk_size=9, distractor_labels=distractors)
        expected = ref.reid_centroid_reference(
            q, g, ql.numpy(), gl.numpy(), qc.numpy(), gc.numpy(), metric, distractors
        )
        assert ours["num_valid_queries"] == expected["num_valid_queries"]
        for key in ("mAP", "Rank-1", "Rank-5", "Rank-10", "Rank-20"):
            assert ours[key] == pytest.approx(expected[key], abs=1e-6), (key, distractors)
    no_singletons = reid_centroid_metrics(q, g, ql, gl, qc, gc, metric=metric)
    assert no_singletons["num_gallery_entries"] == no_singletons["num_centroids"] == len(torch.unique(gl))
    singletons = reid_centroid_metrics(q, g, ql, gl, qc, gc, metric=metric, distractor_labels=[0])
    assert singletons["num_gallery_entries"] == singletons["num_centroids"] + int((gl == 0).sum())


def test_centroid_never_uses_same_camera_images_of_the_query_identity():
    # query id 1, camera 0. Its same-camera gallery image is identical to it; its only cross-camera image
    # is far. A negative identity lies in between. Averaging the same-camera image in (the authors' bug)
    # would put the positive centroid first.
    q = torch.tensor([[0.0, 0.0]])
    g = torch.tensor([[0.0, 0.0], [4.0, 0.0], [2.5, 0.0]])
    out = reid_centroid_metrics(q, g, [1], [1, 1, 2], [0], [0, 1, 0], metric="euclidean")
    assert out["Rank-1"] == 0.0
    assert out["mAP"] == pytest.approx(0.5)  # positive centroid (4, 0) is second
    # without the camera ids, the mean (2, 0) would be first: the filter is what decides
    assert reid_centroid_metrics(q, g, [1], [1, 1, 2], metric="euclidean")["Rank-1"] == 1.0


def test_centroid_keeps_distractor_identities():
    # identity 7 has no query; its centroid is nearest to the query and must stay a negative
    q = torch.tensor([[0.0, 0.0]])
    g = torch.tensor([[3.0, 0.0], [0.5, 0.0], [0.6, 0.0], [-0.4, 0.1]])
    out = reid_centroid_metrics(q, g, [1], [1, 7, 7, 0], [0], [1, 1, 2, 1], metric="euclidean")
    assert out["num_centroids"] == 3
    # ranking: id 0 (0.41), id 7 (0.55), id 1 (3.0); dropping identities without a query would give 1.0
    assert out["Rank-1"] == 0.0 and out["mAP"] == pytest.approx(1 / 3)
    # distractor id 0 as a singleton entry: still one entry, still a negative
    out = reid_centroid_metrics(q, g, [1], [1, 7, 7, 0], [0], [1, 1, 2, 1], metric="euclidean", distractor_labels=[0])
    assert out["num_centroids"] == 2 and out["num_gallery_entries"] == 3
    assert out["mAP"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("fn", [reid_metrics, reid_centroid_metrics])
def test_shared_cameras_error_says_so(fn):
    x = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    cams = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="share cameras"):
        fn(x, x, labels, labels, cams, cams)


@pytest.mark.parametrize("fn", [reid_metrics, reid_centroid_metrics])
def test_bad_inputs_are_named(fn):
    q, g = torch.randn(4, 3), torch.randn(12, 3)
    ql, gl = torch.arange(4), torch.arange(12) % 4
    qc, gc = torch.zeros(4, dtype=torch.long), torch.ones(12, dtype=torch.long)
    with pytest.raises(ValueError, match="gallery_cameras has 10 entries but gallery has 12 rows"):
        fn(q, g, ql, gl, qc, gc[:10])
    with pytest.raises(ValueError, match="query_labels has 3 entries but query has 4 rows"):
        fn(q, g, ql[:3], gl, qc, gc)
    bad = q.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"query contains NaN or inf values in 1 row\(s\): 2"):
        fn(bad, g, ql, gl, qc, gc)
    with pytest.raises(ValueError, match="gallery is empty"):
        fn(q, g[:0], ql, gl[:0], qc, gc[:0])
    with pytest.raises(ValueError, match="query has 3-d embeddings but gallery has 2-d"):
        fn(q, g[:, :2], ql, gl, qc, gc)
    with pytest.raises(ValueError, match="gallery_cameras was not"):
        fn(q, g, ql, gl, qc, None)
    with pytest.raises(ValueError, match="unknown distance"):
        fn(q, g, ql, gl, qc, gc, metric="manhattan")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_reid_on_gpu_equals_cpu():
    q, g, ql, gl, qc, gc = _reid_data(3, dim=16, integer=False)
    cpu = reid_metrics(q, g, ql, gl, qc, gc)
    gpu = reid_metrics(q.cuda(), g.cuda(), ql.cuda(), gl.cuda(), qc.cuda(), gc.cuda())
    assert gpu["mAP"] == pytest.approx(cpu["mAP"], abs=1e-6)
