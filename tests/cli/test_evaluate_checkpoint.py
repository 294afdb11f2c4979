"""``centrum evaluate --checkpoint`` embeds the dataset's query and gallery with centrum.inference (no data
module), with or without flip, and saves embeddings that ``centrum evaluate --embeddings`` scores the same."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from centrum.cli import main
from centrum.data import read_csv
from centrum.evaluation import evaluate_protocol
from centrum.inference import TorchEmbedder, protocol_arrays
from inference.fake_checkpoint import write_checkpoint, write_image


@pytest.fixture
def dataset_csv(tmp_path):
    rows = []
    for s, (split, classes, per) in enumerate(
        (("train", range(2), 2), ("query", range(3), 1), ("gallery", range(3), 3))
    ):
        for c in classes:
            for i in range(per):
                seed = 1000 * s + 10 * c + i
                rows.append((str(write_image(tmp_path / split / f"{c}_{i}.png", seed).relative_to(tmp_path)), c, split))
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    return path


def test_evaluate_checkpoint_equals_embeddings_by_the_library(dataset_csv, tmp_path, capsys):
    checkpoint, _ = write_checkpoint(tmp_path / "model.ckpt")
    results = {}
    for flip in (False, True):
        out, saved = tmp_path / f"m{flip}.json", tmp_path / f"e{flip}.npz"
        argv = ["evaluate", "--checkpoint", str(checkpoint), "--root", str(dataset_csv), "--workers", "0",
                "--device", "cpu", "--json", str(out), "--save-embeddings", str(saved)]  # fmt: skip
        assert main(argv + (["--flip"] if flip else [])) == 0
        results[flip] = json.loads(out.read_text())
        with np.load(saved) as arrays:
            assert len(arrays["query_paths"]) == 3 and len(arrays["gallery_paths"]) == 9
            # the saved embeddings, evaluated from the file, give the same metrics
            assert main(["evaluate", "--embeddings", str(saved), "--protocol", "products"]) == 0
    splits = read_csv(dataset_csv)
    query, gallery = TorchEmbedder.from_checkpoint(checkpoint).embed_splits(splits)
    expected = evaluate_protocol("products", protocol_arrays("products", query, gallery))
    assert results[False]["products"]["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    query, gallery = TorchEmbedder.from_checkpoint(checkpoint, flip=True).embed_splits(splits)
    flipped = evaluate_protocol("products", protocol_arrays("products", query, gallery))
    assert results[True]["products"]["mAP"] == pytest.approx(flipped["mAP"], abs=1e-6)
