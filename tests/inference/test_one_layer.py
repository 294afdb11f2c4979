"""One inference layer: :class:`Preprocess` is the one description of the way from an image to an embedding
(checkpoints, exported files, the service), every embedder satisfies one :class:`Embedder` protocol, and
:func:`load_embedder` tells model files apart by content; serving/, export/ and inference/ need no training code."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from centrum.data import DmlTestTransform
from centrum.export import export_checkpoint
from centrum.inference import (
    PREPROCESS_VERSION,
    Embedder,
    OnnxEmbedder,
    Preprocess,
    TorchEmbedder,
    TorchScriptEmbedder,
    check_batch_output,
    file_kind,
    load_embedder,
    load_model,
)
from inference.fake_checkpoint import SIZE, write_checkpoint, write_image

PACKAGES = pathlib.Path(__file__).resolve().parents[2] / "src" / "centrum"


def _images(tmp_path: pathlib.Path, count: int = 5) -> list[Image.Image]:
    return [Image.open(write_image(tmp_path / f"{i}.png", i, size=30 + i)) for i in range(count)]


def test_serving_export_and_inference_import_no_training_code():
    for package in ("serving", "export", "inference"):
        for file in (PACKAGES / package).glob("*.py"):
            text = file.read_text()
            assert "centrum.training" not in text and "lightning" not in text, file
    code = (
        "import sys, centrum.inference, centrum.export, centrum.serving.app, centrum.serving.store; "
        "print(sorted(m for m in sys.modules if m.startswith('centrum.training') or 'lightning' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_preprocess_json_round_trip_with_version_and_metric():
    pre = Preprocess(
        recipe="dml", input_size=(32, 24), resize=36, mean=(0.5, 0.5, 0.5), feature="raw", metric="euclidean"
    )
    data = json.loads(pre.to_json())
    assert data["version"] == PREPROCESS_VERSION and data["metric"] == "euclidean" and data["input_size"] == [32, 24]
    assert Preprocess.from_json(pre.to_json()) == pre
    assert Preprocess.from_dict(pre.to_dict()) == pre


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": PREPROCESS_VERSION + 1}, "version"),
        ({"colour": "red"}, "unknown field(s) ['colour']"),
        ({"input_size": [32]}, "input_size must be [height, width]"),
        ({"mean": [0.5, 0.5]}, "mean must be 3 numbers"),
        ({"metric": "manhattan"}, "metric 'manhattan'"),
        ({"recipe": "zoom"}, "recipe 'zoom'"),
    ],
)
def test_preprocess_errors_are_one_line_and_name_the_source(change, message):
    text = json.dumps({**Preprocess(recipe="dml", input_size=(32, 32)).to_dict(), **change})
    with pytest.raises(ValueError) as info:
        Preprocess.from_json(text, "m.onnx")
    assert str(info.value).startswith("m.onnx holds no valid centrum preprocessing")
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^m.onnx .*not JSON"):
        Preprocess.from_json("{oops", "m.onnx")
    without_size = Preprocess(recipe="dml", input_size=(32, 32)).to_dict()
    del without_size["input_size"]
    with pytest.raises(ValueError, match="field 'input_size' is missing"):
        Preprocess.from_dict(without_size, "m.onnx")


def test_stored_preprocess_without_metric_takes_the_configs(tmp_path):
    # a checkpoint whose stored preprocessing predates the metric field: the config's evaluation metric fills it
    path, _ = write_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["centrum"]["config"]["evaluation"]["metric"] = "euclidean"
    stored = Preprocess.from_config(checkpoint["centrum"]["config"]).to_dict()
    assert stored["metric"] == "euclidean"
    del stored["metric"], stored["version"]
    checkpoint["centrum"]["preprocess"] = stored
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert load_model(tmp_path / "old.ckpt").preprocess.metric == "euclidean"
    assert TorchEmbedder.from_checkpoint(tmp_path / "old.ckpt").metric == "euclidean"
    checkpoint["centrum"]["preprocess"] = {**stored, "feature": "pooled"}
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"bad.ckpt holds no valid centrum preprocessing: feature 'pooled'"):
        load_model(tmp_path / "bad.ckpt")


def test_batch_and_embed_batch_agree_with_the_transform_and_embed_images(tmp_path):
    path, model = write_checkpoint(tmp_path / "model.ckpt")
    images = _images(tmp_path)
    embedder = TorchEmbedder.from_checkpoint(path)
    assert isinstance(embedder, Embedder)
    batch = embedder.preprocess.batch(images)
    # independent: the DML test transform (resize shorter side to 24, centre crop 24), stacked by hand
    transform = DmlTestTransform((SIZE, SIZE), resize=SIZE)
    expected = torch.stack([transform(im.convert("RGB")) for im in images]).numpy()
    assert batch.dtype == np.float32 and batch.shape == (5, 3, SIZE, SIZE)
    np.testing.assert_array_equal(batch, expected)
    assert embedder.preprocess.batch([]).shape == (0, 3, SIZE, SIZE)
    with torch.no_grad():
        by_hand = torch.nn.functional.normalize(model.embed(torch.from_numpy(expected)), dim=1).numpy()
    np.testing.assert_allclose(embedder.embed_batch(batch), by_hand, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_batch(batch), embedder.embed_images(images), atol=1e-6)
    with pytest.raises(ValueError, match=r"^tiny returned embeddings of shape \(2, 3\), expected \(2, 4\)$"):
        check_batch_output(np.zeros((2, 3)), 2, 4, "tiny")
    assert embedder.description == f"tiny-ctl (small_cnn, {path.name})" and embedder.name == "tiny-ctl"
    embedder.flip = True  # the head the embedder runs (and exports) follows
    assert embedder.head.flip is True
    assert np.abs(embedder.embed_batch(batch) - by_hand).max() > 1e-3


def test_load_embedder_tells_files_apart_by_content_not_name(tmp_path):
    path, _ = write_checkpoint(tmp_path / "model.ckpt")
    images = _images(tmp_path, 3)
    reference = TorchEmbedder.from_checkpoint(path).embed_images(images)
    onnx_file = export_checkpoint(path, "onnx", tmp_path / "model.onnx")
    ts_file = export_checkpoint(path, "torchscript", tmp_path / "model.ts")
    # every file under a misleading name
    files = {
        "checkpoint": shutil.copy(path, tmp_path / "weights.onnx"),
        "torchscript": shutil.copy(ts_file, tmp_path / "exported.ckpt"),
        "onnx": shutil.copy(onnx_file, tmp_path / "exported.pt"),
    }
    classes = {"checkpoint": TorchEmbedder, "torchscript": TorchScriptEmbedder, "onnx": OnnxEmbedder}
    for kind, file in files.items():
        assert file_kind(file) == kind
        embedder = load_embedder(file)
        assert type(embedder) is classes[kind] and isinstance(embedder, Embedder)
        # an exported file keeps the description of the checkpoint it came from
        source = file.name if kind == "checkpoint" else path.name
        assert embedder.name == "tiny-ctl" and embedder.description == f"tiny-ctl (small_cnn, {source})"
        assert embedder.metric == "cosine" and embedder.dim == reference.shape[1]
        assert embedder.preprocess == load_model(path).preprocess
        np.testing.assert_allclose(embedder.embed_images(images), reference, atol=1e-4)
    (tmp_path / "junk.bin").write_bytes(b"neither a model nor anything else")
    with pytest.raises(
        ValueError, match=r"junk\.bin is neither a centrum checkpoint, a TorchScript export nor an ONNX"
    ):
        load_embedder(tmp_path / "junk.bin")
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt does not exist"):
        load_embedder(tmp_path / "missing.ckpt")
