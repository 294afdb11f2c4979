"""``centrum export``: a trained model as an ONNX or TorchScript file that embeds images on its own.

The exported graph maps a ``batch x 3 x H x W`` float32 input (named ``images``, dynamic batch axis) to the
model's inference feature, L2-normalised (``embeddings``, ``batch x D``): exactly what ``centrum embed``
computes. The :class:`~centrum.serving.embedder.Preprocessing` (input size, resize/crop recipe, mean/std, which
feature, normalisation, metric) is stored in the file: ONNX ``metadata_props`` / TorchScript extra files.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from centrum.io import atomic_write_bytes
from centrum.serving.embedder import Preprocessing, check_batch_output
from centrum.serving.torch_embedder import TorchEmbedder

FORMATS = ("onnx", "torchscript")
#: metadata keys (ONNX metadata_props and TorchScript extra-file names)
META_PREPROCESSING = "centrum.preprocessing"
META_NAME = "centrum.name"
META_DIM = "centrum.dim"
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
ONNX_OPSET = 17


def _example_input(embedder: TorchEmbedder, batch: int = 2) -> torch.Tensor:
    height, width = embedder.preprocess.image_size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def export_onnx(embedder: TorchEmbedder, out: str | Path) -> Path:
    """Write ``embedder``'s model as ONNX (opset 17, dynamic batch axis) with the preprocessing in its metadata."""
    import onnx

    head = embedder.head.cpu().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            head,
            (_example_input(embedder),),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,  # the legacy exporter: 15x faster to export here, same graph for these CNNs
        )
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in _metadata(embedder).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return atomic_write_bytes(out, model.SerializeToString())


def export_torchscript(embedder: TorchEmbedder, out: str | Path) -> Path:
    """Write ``embedder``'s model as a traced TorchScript module with the preprocessing as extra files."""
    head = embedder.head.cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape arithmetic: the input size is fixed per file
        traced = torch.jit.trace(head, (_example_input(embedder),), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=_metadata(embedder))
    return atomic_write_bytes(out, buffer.getvalue())


def _metadata(embedder: TorchEmbedder) -> dict[str, str]:
    return {
        META_PREPROCESSING: embedder.preprocess.to_json(),
        META_NAME: embedder.name,
        META_DIM: str(embedder.dim),
    }


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the model of a ``centrum train`` checkpoint to ``out`` in format ``fmt`` (``onnx``/``torchscript``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    embedder = TorchEmbedder.from_checkpoint(checkpoint, device="cpu")
    return export_onnx(embedder, out) if fmt == "onnx" else export_torchscript(embedder, out)


class TorchScriptEmbedder:
    """Embeds PIL images with a TorchScript file written by :func:`export_torchscript` (no centrum model code)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TorchScript file {path} does not exist")
        extra = {META_PREPROCESSING: "", META_NAME: "", META_DIM: ""}
        try:
            self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{path} is not a TorchScript file: {str(exc).splitlines()[0]}") from exc
        if not extra[META_PREPROCESSING]:
            raise ValueError(f"{path} has no {META_PREPROCESSING} extra file: export it with `centrum export`")
        self.preprocess = Preprocessing.from_json(_text(extra[META_PREPROCESSING]), str(path))
        self.name = _text(extra[META_NAME]) or path.name
        self.dim = int(_text(extra[META_DIM]))
        self.metric = self.preprocess.metric
        self.device = torch.device(device)

    @torch.inference_mode()
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings of an already preprocessed ``N x 3 x H x W`` float32 batch."""
        out = self.module(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        return check_batch_output(out, batch.shape[0], self.dim, self.name)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings (N x dim float32) of RGB ``images`` after the file's stored test transform."""
        if not images:
            return np.empty((0, self.dim), np.float32)
        return self.embed_batch(self.preprocess.batch(images))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_embedder(path: str | Path, device: str = "cpu"):
    """An embedder for ``path``: ONNX (``.onnx``), TorchScript (``.pt``/``.ts``/``.torchscript``) or a checkpoint."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from centrum.inference.onnx_runtime import OnnxEmbedder

        return OnnxEmbedder(path)
    if suffix in (".ts", ".torchscript", ".pt", ".jit"):
        with contextlib.suppress(ValueError):
            return TorchScriptEmbedder(path, device)
    return TorchEmbedder.from_checkpoint(path, device)


__all__ = [
    "FORMATS",
    "TorchScriptEmbedder",
    "export_checkpoint",
    "export_onnx",
    "export_torchscript",
    "load_embedder",
]
