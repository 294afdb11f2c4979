"""ONNX Runtime and TorchScript files written by ``centrum export`` embed real images as PyTorch does.

For every backbone a shipped config uses and both heads (BNNeck feature; embedding layer without BNNeck):
max abs difference of the L2-normalised embeddings <= 1e-4 and identical top-10 rankings of each query over a
small gallery, on Omniglot drawings (and Fashion-MNIST when installed). Batch sizes other than the export's
(1 and 7) check the dynamic batch axis; the preprocessing comes from the file's metadata alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from checkpoints import fashion_mnist_images, make_checkpoint, omniglot_images

from centrum.cli import main
from centrum.export import export_checkpoint
from centrum.inference import Embedder, OnnxEmbedder, TorchEmbedder, TorchScriptEmbedder, load_embedder

GALLERY, QUERIES = 24, 7

# (backbone, bnneck, embedding_dim, recipe, image_size, transform options): every backbone of configs/,
# at a small input size so that the test stays quick on a CPU
CASES = {
    "small_cnn-bnneck": ("small_cnn", True, None, "dml", (32, 32), {"resize": 36}),
    "small_cnn-embedding": ("small_cnn", False, 64, "dml", (32, 32), {"resize": 32}),
    "resnet50-bnneck": ("resnet50", True, None, "reid", (64, 32), {}),
    "resnet50_ibn_a-bnneck": ("resnet50_ibn_a", True, None, "reid", (64, 32), {}),
    "googlenet-embedding": ("googlenet", False, 512, "dml", (64, 64), {"resize": 72}),
    "efficientnet_lite0-bnneck": ("efficientnet_lite0", True, None, "dml", (64, 64), {"resize": 72}),
}
# 3-10 s each on a quiet 2-core machine, minutes on a loaded one: run in CI (CI=true) or with --runslow
SLOW = {"resnet50-bnneck", "resnet50_ibn_a-bnneck", "googlenet-embedding", "efficientnet_lite0-bnneck"}


def _images() -> dict[str, list]:
    sets = {"omniglot": omniglot_images(GALLERY + QUERIES)[0]}
    fashion = fashion_mnist_images(GALLERY + QUERIES)
    if fashion is not None:
        sets["fashion-mnist"] = fashion[0]
    return sets


def _top10(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :10]


def _check_parity(reference: Embedder, exported: Embedder, images: list) -> None:
    ref = reference.embed_images(images)
    out = np.concatenate(
        [exported.embed_images(images[:1]), exported.embed_images(images[1:8]), exported.embed_images(images[8:])]
    )
    assert out.shape == ref.shape == (len(images), reference.dim)
    assert np.allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    assert float(np.abs(out - ref).max()) <= 1e-4
    assert ref.std(axis=0).mean() > 1e-3  # the embeddings differ between images: the ranking check means something
    gallery, queries = slice(0, GALLERY), slice(GALLERY, GALLERY + QUERIES)
    np.testing.assert_array_equal(_top10(out[queries], out[gallery]), _top10(ref[queries], ref[gallery]))


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_onnx_and_torchscript_match_pytorch(case: str, tmp_path: Path) -> None:
    backbone, bnneck, dim, recipe, size, options = CASES[case]
    sets = _images()
    ckpt = make_checkpoint(
        tmp_path / "model.ckpt",
        backbone,
        bnneck=bnneck,
        embedding_dim=dim,
        recipe=recipe,
        image_size=size,
        transform_options=options,
        calibration=sets["omniglot"][:16],
    )
    reference = TorchEmbedder.from_checkpoint(ckpt)
    onnx_file = export_checkpoint(ckpt, "onnx", tmp_path / "model.onnx")
    ts_file = export_checkpoint(ckpt, "torchscript", tmp_path / "model.ts")
    onnx_embedder, ts_embedder = OnnxEmbedder(onnx_file, threads=1), TorchScriptEmbedder(ts_file)
    for exported in (onnx_embedder, ts_embedder):
        assert isinstance(exported, Embedder)
        assert exported.dim == reference.dim and exported.preprocess == reference.preprocess
        for images in sets.values():
            _check_parity(reference, exported, images)


def test_onnx_file_metadata_and_dynamic_batch_axis(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", transform_options={"resize": 40, "mean": [0.5, 0.5, 0.5]})
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    model = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["centrum.dim"] == "128"
    assert '"resize": 40' in meta["centrum.preprocessing"] and '"feature": "bn"' in meta["centrum.preprocessing"]
    (inp,) = model.graph.input
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    embedder = load_embedder(tmp_path / "m.onnx")
    assert isinstance(embedder, OnnxEmbedder)
    assert embedder.preprocess.resize == 40 and embedder.preprocess.mean == (0.5, 0.5, 0.5)


def test_export_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "none.ckpt"),
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "x.onnx"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxEmbedder(tmp_path / "bad.onnx")
    assert not (tmp_path / "x.onnx").exists()
