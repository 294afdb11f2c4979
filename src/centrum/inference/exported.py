"""Models exported by ``centrum export``, read back: :class:`TorchScriptEmbedder`, and :func:`load_embedder`,
which picks the embedder of a file by its content (``centrum train`` checkpoint, TorchScript or ONNX).

An exported file maps a ``batch x 3 x H x W`` float32 input to L2-normalised embeddings and carries, as
metadata (ONNX ``metadata_props``, TorchScript extra files), the :meth:`~centrum.inference.Preprocess.to_json`
of its preprocessing, its name, description and dimension: the file alone embeds an image.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from centrum.inference.model import Preprocess, resolve_device
from centrum.inference.protocol import Embedder, check_batch_output

#: metadata keys (ONNX metadata_props and TorchScript extra-file names)
META_PREPROCESSING = "centrum.preprocessing"
META_NAME = "centrum.name"
META_DESCRIPTION = "centrum.description"
META_DIM = "centrum.dim"
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TorchScriptEmbedder:
    """Embeds PIL images with a TorchScript file written by ``centrum export --format torchscript`` (no centrum
    model code needed). Satisfies :class:`~centrum.inference.Embedder`."""

    def __init__(self, path: str | Path, device: str | torch.device | None = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TorchScript file {path} does not exist")
        self.device = resolve_device(device)
        extra = {META_PREPROCESSING: "", META_NAME: "", META_DESCRIPTION: "", META_DIM: ""}
        try:
            self.module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra).eval()
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{path} is not a TorchScript file: {str(exc).splitlines()[0]}") from exc
        if not extra[META_PREPROCESSING]:
            raise ValueError(f"{path} has no {META_PREPROCESSING} extra file: export it with `centrum export`")
        self.preprocess = Preprocess.from_json(_text(extra[META_PREPROCESSING]), str(path))
        self.name = _text(extra[META_NAME]) or path.name
        self.description = _text(extra[META_DESCRIPTION]) or self.name
        try:
            self.dim = int(_text(extra[META_DIM]))
        except ValueError:
            raise ValueError(f"{path} has no valid {META_DIM} extra file: export it with `centrum export`") from None
        self.path = path

    @property
    def metric(self) -> str:
        """The distance the model was evaluated with (``preprocess.metric``)."""
        return self.preprocess.metric

    @torch.inference_mode()
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings of an already preprocessed ``N x 3 x H x W`` float32 batch."""
        inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        out = self.module(inputs).float().cpu().numpy()
        return check_batch_output(out, batch.shape[0], self.dim, self.name)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings (N x dim float32) of RGB ``images`` after the file's stored test transform."""
        if len(images) == 0:
            return np.empty((0, self.dim), np.float32)
        return self.embed_batch(self.preprocess.batch(images))


def file_kind(path: str | Path) -> str:
    """What ``path`` holds, by content: ``"torchscript"`` (a zip archive with TorchScript code),
    ``"checkpoint"`` (another ``torch.save`` file) or ``"onnx"`` (anything else: ONNX Runtime judges it).

    Raises ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        # torch.save and torch.jit.save both write zip archives "<name>/..."; only TorchScript has code/
        if any(n.split("/", 1)[-1].startswith("code/") for n in names):
            return "torchscript"
        return "checkpoint"
    with path.open("rb") as f:
        head = f.read(2)
    return "checkpoint" if head[:1] == b"\x80" else "onnx"  # \x80: a legacy (pickle) torch.save file


def load_embedder(path: str | Path, device: str | torch.device | None = "cpu", threads: int | None = None) -> Embedder:
    """The embedder of a model file, chosen by its content (not its name): a ``centrum train`` checkpoint
    (:class:`~centrum.inference.TorchEmbedder`), a TorchScript export (:class:`TorchScriptEmbedder`) or an ONNX
    export (:class:`~centrum.inference.OnnxEmbedder`, on the CPU with ``threads`` intra-op threads).

    Raises ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` for any other file.
    """
    kind = file_kind(path)
    if kind == "torchscript":
        return TorchScriptEmbedder(path, device)
    if kind == "checkpoint":
        from centrum.inference.embedder import TorchEmbedder

        return TorchEmbedder.from_checkpoint(path, device)
    from centrum.inference.onnx_runtime import OnnxEmbedder

    try:
        return OnnxEmbedder(path, threads=threads)
    except ValueError as exc:
        if "not a loadable ONNX model" not in str(exc):
            raise
        raise ValueError(
            f"{path} is neither a centrum checkpoint, a TorchScript export nor an ONNX export "
            f"(ONNX Runtime: {str(exc).split(': ', 1)[-1]})"
        ) from None
