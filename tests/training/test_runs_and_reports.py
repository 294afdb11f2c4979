"""Repeated runs (mean and spread over seeds), the demo's data check, and the report pictures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from centrum.demo import demo_table, ensure_fashion_mnist
from centrum.reports import plot_embedding_map, plot_ranked_lists, plot_training_curves
from centrum.training import summarize_runs, train_runs


def test_summarize_runs_by_hand() -> None:
    runs = [
        {"products": {"mAP": 0.2, "Acc@1": 0.5, "num_queries": 10}},
        {"products": {"mAP": 0.4, "Acc@1": 0.7, "num_queries": 10}},
        {"products": {"mAP": 0.6, "Acc@1": 0.9, "num_queries": 10}},
    ]
    summary = summarize_runs(runs)
    mean, std = summary["products"]["mAP"]
    assert mean == pytest.approx(0.4) and std == pytest.approx(0.2)  # sample standard deviation
    assert summary["products"]["num_queries"] == (10.0, 0.0)


def test_runs_repeat_with_consecutive_seeds(stripes_splits, tiny_config, tmp_path: Path, monkeypatch) -> None:
    from centrum.training import run as run_module

    config = tiny_config("ctl", max_epochs=2)
    original = run_module.train
    monkeypatch.setattr(
        run_module, "train", lambda c, d, resume=False: original(c, d, splits=stripes_splits, enable_progress_bar=False)
    )
    results = train_runs(config, tmp_path, runs=2)
    assert [json.loads((r.run_dir / "results.json").read_text())["seed"] for r in results] == [0, 1]
    assert [r.run_dir.name for r in results] == ["seed-0", "seed-1"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    maps = [r.metrics["products"]["mAP"] for r in results]
    assert summary["products"]["mAP"]["mean"] == pytest.approx(np.mean(maps))
    assert summary["products"]["mAP"]["std"] == pytest.approx(np.std(maps, ddof=1))
    assert maps[0] != maps[1]  # different seeds, different runs
    with pytest.raises(ValueError, match="runs must be at least 1"):
        train_runs(config, tmp_path, runs=0)


def test_demo_prints_the_install_command_when_it_may_not_install(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="apt-get install -y dataset-fashion-mnist"):
        ensure_fashion_mnist(tmp_path, install=False)


def test_demo_table_shows_percent() -> None:
    metrics = {"products": {"mAP": 0.5, "Acc@1": 0.875}, "products-centroids": {"mAP": 0.25, "Acc@1": 1.0}}
    assert "| triplet | 50.0 | 87.5 | 25.0 | 100.0 |" in demo_table({"triplet": metrics})


def test_ranked_list_picture(tmp_path: Path) -> None:
    gallery = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(5)]
    path = plot_ranked_lists(
        lambda i: gallery[i],
        lambda j: gallery[j],
        [0, 1],
        np.array([[1, 2, 3], [0, 4, 2]]),
        np.array([0, 1]),
        np.array([0, 0, 1, 1, 1]),
        tmp_path / "r.png",
        distances=np.ones((2, 3)),
    )
    width, height = Image.open(path).size
    assert width > height > 0  # two rows of four pictures
    with pytest.raises(ValueError, match="query_indices is empty"):
        plot_ranked_lists(
            gallery.__getitem__,
            gallery.__getitem__,
            [],
            np.zeros((0, 3), int),
            np.array([]),
            np.array([]),
            tmp_path / "x.png",
        )


def test_training_curves_and_embedding_map(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.csv"
    with metrics.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss_epoch", "eval/products/mAP"])
        writer.writerows([[0, 3, 1.0, ""], [1, 7, 0.5, 0.3]])
    assert Image.open(plot_training_curves(metrics, tmp_path / "c.png")).size[1] > 0
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step\n0,1\n")
    with pytest.raises(ValueError, match="no per-epoch columns"):
        plot_training_curves(empty, tmp_path / "d.png")
    with pytest.raises(FileNotFoundError, match=r"nope\.csv does not exist"):
        plot_training_curves(tmp_path / "nope.csv", tmp_path / "e.png")
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (20, 8)), rng.normal(3, 0.1, (20, 8))])
    assert Image.open(plot_embedding_map(points, np.repeat([0, 1], 20), tmp_path / "t.png")).size[0] > 0
