"""centrum.inference: loading a checkpoint without Lightning, safely; embeddings equal the model's own features
computed by hand; flip test-time augmentation; folders with class names; query then gallery once."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from centrum.data import DatasetSplits, DmlTestTransform, ReidTestTransform, SampleList
from centrum.inference import (
    Embeddings,
    Preprocess,
    TorchEmbedder,
    collect_images,
    embed_query_gallery,
    load_model,
    resolve_device,
)
from inference.fake_checkpoint import SIZE, write_checkpoint, write_class_folders, write_image

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "centrum" / "inference"


def test_inference_imports_no_lightning():
    # static: no file of the package names lightning; dynamic: importing it loads no lightning module
    for file in SRC.glob("*.py"):
        assert "lightning" not in file.read_text(), file
    code = "import sys, centrum.inference; print([m for m in sys.modules if m.split('.')[0].endswith('lightning')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("kind", ["ctl", "metric"])
def test_embeddings_equal_the_models_features_by_hand(tmp_path, kind):
    path, model = write_checkpoint(tmp_path / "model.ckpt", kind=kind)
    images = [Image.open(write_image(tmp_path / f"{i}.png", i, size=30 + i)) for i in range(5)]
    embedder = TorchEmbedder.from_checkpoint(path)
    got = embedder.embed_images(images)
    # independent: the DML test transform (resize shorter side to 24, centre crop 24), model.embed, L2 norm
    transform = DmlTestTransform((SIZE, SIZE), resize=SIZE)
    with torch.no_grad():
        raw = model.embed(torch.stack([transform(im.convert("RGB")) for im in images]))
    expected = torch.nn.functional.normalize(raw, dim=1).numpy()
    assert got.dtype == np.float32 and got.shape == (5, embedder.dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert embedder.name == f"tiny-{kind}" and embedder.metric == "cosine"
    assert embedder.preprocess.feature == ("bn" if kind == "ctl" else "raw")
    # the same images through files, a SampleList and a loader give the same rows
    paths = [str(tmp_path / f"{i}.png") for i in range(5)]
    by_samples = embedder.embed_samples(SampleList(paths, np.arange(5)))
    np.testing.assert_allclose(by_samples.embeddings, expected, atol=1e-5)
    assert by_samples.labels.tolist() == [0, 1, 2, 3, 4] and by_samples.paths == paths


def test_flip_is_the_mean_of_image_and_mirror_features(tmp_path):
    path, model = write_checkpoint(tmp_path / "model.ckpt", kind="ctl", recipe="reid")
    images = [Image.open(write_image(tmp_path / f"{i}.png", i)) for i in range(3)]  # at input size: no resize
    got = TorchEmbedder.from_checkpoint(path, flip=True).embed_images(images)
    transform = ReidTestTransform((SIZE, SIZE))
    with torch.no_grad():
        plain = model.embed(torch.stack([transform(im.convert("RGB")) for im in images]))
        mirrored = model.embed(torch.stack([transform(ImageOps.mirror(im.convert("RGB"))) for im in images]))
    expected = torch.nn.functional.normalize((plain + mirrored) / 2, dim=1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    no_flip = TorchEmbedder.from_checkpoint(path).embed_images(images)
    assert np.abs(no_flip - got).max() > 1e-3  # the option does something


def test_preprocess_is_plain_data_rebuilt_from_the_checkpoint(tmp_path):
    path, _ = write_checkpoint(tmp_path / "model.ckpt")
    pre = load_model(path).preprocess
    assert isinstance(pre, Preprocess)
    plain = json.loads(json.dumps(pre.to_dict()))
    assert plain["recipe"] == "dml" and plain["input_size"] == [SIZE, SIZE] and plain["resize"] == SIZE
    assert plain["mean"] == pytest.approx([0.485, 0.456, 0.406]) and plain["normalize"] is True
    assert Preprocess.from_dict(plain) == pre
    # a preprocessing stored in the checkpoint wins over the config's
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["centrum"]["preprocess"] = {**plain, "recipe": "reid", "input_size": [32, 16]}
    torch.save(checkpoint, tmp_path / "stored.ckpt")
    embedder = TorchEmbedder.from_checkpoint(tmp_path / "stored.ckpt")
    assert embedder.preprocess.input_size == (32, 16)
    assert embedder.embed_images([Image.new("RGB", (50, 50))]).shape == (1, embedder.dim)


class _CreatesAFile:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    path, _ = write_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    marker = tmp_path / "pwned"
    checkpoint["callbacks"] = {"evil": _CreatesAFile(marker)}
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="refused: it holds Python objects that could run code"):
        load_model(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_damaged_or_foreign_checkpoints_are_value_errors(tmp_path):
    path, _ = write_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="could not be read as a PyTorch file"):
        load_model(tmp_path / "cut.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="is not a centrum checkpoint"):
        load_model(tmp_path / "other.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["model.bnneck.weight"]
    torch.save(checkpoint, tmp_path / "short.ckpt")
    with pytest.raises(ValueError, match="1 missing, 0 unexpected"):
        load_model(tmp_path / "short.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "none.ckpt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is visible")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not understood"):
        resolve_device("gpu0")
    assert resolve_device(None).type == "cpu"


def test_collect_images_reads_class_folders_and_loose_images(tmp_path):
    root = write_class_folders(tmp_path / "photos", {"dog": [1, 2], "cat": [3]})
    write_image(root / "loose.png", 4)
    single = write_image(tmp_path / "single.jpg", 5)
    samples, names = collect_images([root, single])
    assert names == ["cat", "dog"]
    by_name = {pathlib.Path(p).name: int(lab) for p, lab in zip(samples.paths, samples.labels, strict=True)}
    assert by_name == {"loose.png": -1, "3.png": 0, "1.png": 1, "2.png": 1, "single.jpg": -1}
    assert all(pathlib.Path(p).is_absolute() for p in samples.paths)
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        collect_images([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        collect_images([tmp_path / "empty"])


def test_query_then_gallery_embeds_one_set_once():
    calls = []

    def embed(samples: SampleList) -> Embeddings:
        calls.append(samples)
        return Embeddings(np.zeros((len(samples), 2), np.float32), samples.labels, samples.cameras, list(samples.paths))

    test = SampleList(["a", "b"], [0, 1])
    dml = DatasetSplits("x", "dml", test, test, test, num_train_classes=1)
    query, gallery = embed_query_gallery(embed, dml)
    assert len(calls) == 1 and gallery is query
    other = SampleList(["c"], [0])
    products = DatasetSplits("x", "products", test, test, other, num_train_classes=1)
    query, gallery = embed_query_gallery(embed, products)
    assert len(calls) == 3 and calls[-1] is other and gallery.paths == ["c"]


def test_embedding_draws_no_progress_bar_when_output_is_not_a_terminal(capfd):
    from torch import nn
    from torch.utils.data import DataLoader

    from centrum.inference import embed_loader

    class Flat(nn.Module):
        def embed(self, images):
            return images.flatten(1)

    rows = [(torch.full((3, 2, 2), float(i)), 0, 0, i) for i in range(12)]
    loader = DataLoader(rows, batch_size=2)  # 6 batches: enough for a bar on a terminal
    features, indices = embed_loader(Flat(), loader, torch.device("cpu"))
    assert features.shape == (12, 12) and indices.tolist() == list(range(12))
    err = capfd.readouterr().err
    assert "\r" not in err and "embed" not in err
