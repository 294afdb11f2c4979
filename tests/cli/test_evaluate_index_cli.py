"""``centrum evaluate`` and ``centrum index build|search`` end to end on small .npz files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from centrum.cli import main
from centrum.evaluation import dml_metrics, reid_metrics


@pytest.fixture
def reid_npz(tmp_path):
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 16, generator=gen)
    ql, gl = torch.arange(20) % 8, torch.arange(60) % 8
    arrays = {
        "query": (centres[ql] + 0.5 * torch.randn(20, 16, generator=gen)).numpy(),
        "gallery": (centres[gl] + 0.5 * torch.randn(60, 16, generator=gen)).numpy(),
        "query_labels": ql.numpy(),
        "gallery_labels": gl.numpy(),
        "query_cameras": np.zeros(20, np.int64),
        "gallery_cameras": (np.arange(60) % 3).astype(np.int64),
    }
    path = tmp_path / "emb.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_evaluate_reid_centroids_prints_both_and_writes_json(reid_npz, tmp_path, capsys):
    path, arrays = reid_npz
    out = tmp_path / "m.json"
    assert main(["evaluate", "--embeddings", str(path), "--protocol", "reid-centroids", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reid-centroids (gallery labels)" in printed and "metrics in %" in printed and " mAP" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100
    metrics = json.loads(out.read_text())
    expected = reid_metrics(
        arrays["query"],
        arrays["gallery"],
        arrays["query_labels"],
        arrays["gallery_labels"],
        arrays["query_cameras"],
        arrays["gallery_cameras"],
    )
    assert metrics["reid"]["mAP"] == pytest.approx(expected["mAP"])
    assert 0.0 <= metrics["reid-centroids"]["mAP"] <= 1.0


def test_evaluate_dml(tmp_path, capsys):
    x, labels = torch.randn(40, 8), torch.arange(40) % 5
    np.savez(tmp_path / "d.npz", embeddings=x.numpy(), labels=labels.numpy())
    out = tmp_path / "d.json"
    assert main(["evaluate", "--embeddings", str(tmp_path / "d.npz"), "--protocol", "dml", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["dml"]["Recall@1"] == pytest.approx(dml_metrics(x, labels)["Recall@1"])
    # many columns (Recall@K, MAP@R, mAP, ...) wrap into blocks within 100 characters instead of one wide line
    printed = capsys.readouterr().out
    assert "Recall@1" in printed and "MAP@R" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100


def test_evaluate_errors_exit_2(reid_npz, tmp_path, capsys):
    path, arrays = reid_npz
    assert main(["evaluate", "--embeddings", str(tmp_path / "none.npz"), "--protocol", "reid"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--embeddings", str(path), "--protocol", "dml"]) == 2
    assert "missing embeddings, labels" in capsys.readouterr().err
    bad = dict(arrays, gallery_cameras=arrays["gallery_cameras"][:10])
    np.savez(tmp_path / "bad.npz", **bad)
    assert main(["evaluate", "--embeddings", str(tmp_path / "bad.npz"), "--protocol", "reid"]) == 2
    assert "gallery_cameras has 10 entries but gallery has 60 rows" in capsys.readouterr().err


@pytest.mark.parametrize("centroids", [False, True])
def test_index_build_and_search(reid_npz, tmp_path, capsys, centroids):
    path, _ = reid_npz
    out_dir, res = tmp_path / "idx", tmp_path / "res.json"
    assert (
        main(
            [
                "index",
                "build",
                "--embeddings",
                str(path),
                "--out",
                str(out_dir),
                *(["--centroids"] if centroids else []),
            ]
        )
        == 0
    )
    assert main(["index", "search", str(out_dir), "--queries", str(path), "-k", "3", "--json", str(res)]) == 0
    printed = capsys.readouterr().out
    assert "top-1 label accuracy" in printed
    result = json.loads(res.read_text())
    assert np.array(result["labels"]).shape == (20, 3)
    if centroids:
        assert set(np.array(result["labels"]).ravel()) <= set(range(8))
    assert main(["index", "search", str(tmp_path / "nothing"), "--queries", str(path)]) == 2
    assert "no index at" in capsys.readouterr().err
