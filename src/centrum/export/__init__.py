"""``centrum export``: a trained model as an ONNX or TorchScript file that embeds images on its own.

The exported graph is the :class:`~centrum.inference.EmbeddingHead` of the checkpoint's
:class:`~centrum.inference.TorchEmbedder`: a ``batch x 3 x H x W`` float32 input (named ``images``, dynamic
batch axis) to the model's inference feature, L2-normalised (``embeddings``, ``batch x D``), exactly what
``centrum embed`` computes. The :class:`~centrum.inference.Preprocess` (input size, resize/crop recipe,
mean/std, which feature, normalisation, metric) is stored in the file as :meth:`Preprocess.to_json`: ONNX
``metadata_props`` / TorchScript extra files. Reading the files back lives in :mod:`centrum.inference`
(:class:`~centrum.inference.OnnxEmbedder`, :class:`~centrum.inference.TorchScriptEmbedder`,
:func:`~centrum.inference.load_embedder`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from centrum.inference import TorchEmbedder
from centrum.inference.exported import (
    INPUT_NAME,
    META_DESCRIPTION,
    META_DIM,
    META_NAME,
    META_PREPROCESSING,
    OUTPUT_NAME,
)
from centrum.io import atomic_write_bytes

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17


def _example_input(embedder: TorchEmbedder, batch: int = 2) -> torch.Tensor:
    height, width = embedder.preprocess.input_size
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
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape arithmetic: the input size is fixed per file
        traced = torch.jit.trace(head, (_example_input(embedder),), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=_metadata(embedder))
    return atomic_write_bytes(out, buffer.getvalue())


def _metadata(embedder: TorchEmbedder) -> dict[str, str]:
    return {
        META_PREPROCESSING: embedder.preprocess.to_json(),
        META_NAME: embedder.name,
        META_DESCRIPTION: embedder.description,
        META_DIM: str(embedder.dim),
    }


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the model of a ``centrum train`` checkpoint to ``out`` in format ``fmt`` (``onnx``/``torchscript``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    # contiguous weights: the exported file runs wherever it is loaded, with that runtime's own layout choices
    embedder = TorchEmbedder.from_checkpoint(checkpoint, device="cpu", channels_last=False)
    return export_onnx(embedder, out) if fmt == "onnx" else export_torchscript(embedder, out)


__all__ = ["FORMATS", "ONNX_OPSET", "export_checkpoint", "export_onnx", "export_torchscript"]
