"""Fixtures: a small_cnn 32x32 checkpoint, Omniglot drawings and a live ``centrum serve`` per test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from checkpoints import make_checkpoint, omniglot_images
from live_server import API_KEY, Server, start_server


@pytest.fixture(scope="session")
def drawings():
    """Omniglot drawings: 6 characters x 4 drawings, as (images, labels)."""
    return omniglot_images(24, per_class=4)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory, drawings) -> dict[str, Path]:
    """A small_cnn 32x32 checkpoint (BatchNorm statistics from Omniglot), its ONNX export and an API key file."""
    folder = tmp_path_factory.mktemp("model")
    ckpt = make_checkpoint(folder / "model.ckpt", transform_options={"resize": 36}, calibration=drawings[0][:16])
    from centrum.export import export_checkpoint

    onnx_file = export_checkpoint(ckpt, "onnx", folder / "model.onnx")
    keys = folder / "keys.txt"
    keys.write_text(f"# test keys\n{API_KEY}\nother-key\n")
    return {"checkpoint": ckpt, "onnx": onnx_file, "keys": keys}


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_files) -> Iterator[Server]:
    """One service per test module, with keys, a 1 MB upload limit and a 1 M pixel limit."""
    index = tmp_path_factory.mktemp("index") / "idx"
    srv = start_server(
        index,
        ["--checkpoint", str(model_files["checkpoint"])],
        ["--api-key-file", str(model_files["keys"]), "--max-upload-mb", "1", "--max-pixels", "1000000"],
    )
    yield srv
    srv.stop()
