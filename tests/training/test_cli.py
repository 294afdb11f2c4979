"""The command line end to end: train -> evaluate --checkpoint -> embed -> index build -> search."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from centrum.cli import main


def write_config(tmp_path: Path, tiny_config, stripes_csv: Path) -> Path:
    config = tiny_config("symm", max_epochs=2)
    config.data.root = str(stripes_csv)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    return path


def test_train_evaluate_embed_index_search(stripes_csv: Path, tiny_config, tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, tiny_config, stripes_csv)
    run = tmp_path / "run"
    assert main(["train", str(config), "trainer.max_epochs=1", "--out", str(run)]) == 0
    checkpoint = run / "model.ckpt"
    assert checkpoint.is_file()
    trained_metrics = json.loads((run / "results.json").read_text())["metrics"]

    # evaluate --checkpoint re-embeds the dataset and gives the metrics the run reported
    metrics_json, saved = tmp_path / "m.json", tmp_path / "e.npz"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--workers", "0", "--json", str(metrics_json)]
    assert main([*args, "--save-embeddings", str(saved)]) == 0
    evaluated = json.loads(metrics_json.read_text())
    for protocol in ("products", "products-centroids"):
        assert evaluated[protocol]["mAP"] == pytest.approx(trained_metrics[protocol]["mAP"], abs=1e-6)
    with np.load(saved) as arrays:
        assert set(arrays.files) >= {"query", "gallery", "query_labels", "gallery_labels"}

    # embed a folder of class sub-folders, index it, search with one of its own images
    by_class = tmp_path / "gallery"
    for i, image in enumerate(sorted((stripes_csv.parent / "gallery").glob("*.png"))):
        (by_class / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, by_class / f"class{i % 3}" / image.name)
    embeddings = tmp_path / "g.npz"
    assert main(["embed", "--checkpoint", str(checkpoint), str(by_class), "--out", str(embeddings)]) == 0
    with np.load(embeddings) as arrays:
        assert arrays["embeddings"].shape[0] == len(list(by_class.rglob("*.png")))
        np.testing.assert_allclose(np.linalg.norm(arrays["embeddings"], axis=1), 1.0, rtol=1e-5)
        assert list(arrays["class_names"]) == ["class0", "class1", "class2"]
        first_path = str(arrays["paths"][0])
    index = tmp_path / "index"
    assert main(["index", "build", "--embeddings", str(embeddings), "--out", str(index)]) == 0
    picture = tmp_path / "ranked.png"
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                "--checkpoint",
                str(checkpoint),
                "--index",
                str(index),
                first_path,
                "-k",
                "3",
                "--picture",
                str(picture),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    top = next(line for line in out.splitlines() if line.strip().startswith("1."))
    assert first_path in top  # an indexed image finds itself first
    assert float(top.split()[1]) < 1e-4
    assert picture.stat().st_size > 1000


def test_cli_errors_name_the_file_at_fault(tmp_path: Path, capsys) -> None:
    not_centrum = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, not_centrum)
    assert main(["evaluate", "--checkpoint", str(not_centrum)]) == 2
    assert f"{not_centrum} is not a centrum checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    args = ["evaluate", "--checkpoint", str(not_centrum), "--dataset", "cub200", "--option", "max_per_class"]
    assert main(args) == 2
    assert "--option 'max_per_class' must look like KEY=VALUE" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(not_centrum), "--option", "max_per_class=5"]) == 2
    assert "give --dataset too" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml does not exist" in capsys.readouterr().err
    config = tmp_path / "bad.yaml"
    config.write_text("trainer:\n  max_epoch: 3\n")
    assert main(["train", str(config)]) == 2
    assert "did you mean 'max_epochs'?" in capsys.readouterr().err
