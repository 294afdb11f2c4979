"""What a service, the exporter and the benchmarks need of a model: an :class:`Embedder` (images in, embeddings
out). A PyTorch checkpoint (:class:`~centrum.inference.TorchEmbedder`), an ONNX file
(:class:`~centrum.inference.OnnxEmbedder`) and a TorchScript file (:class:`~centrum.inference.TorchScriptEmbedder`)
serve alike through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from centrum.inference.model import Preprocess


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns images into embeddings: PyTorch, ONNX Runtime or TorchScript.

    ``embed_images`` returns an ``N x dim`` float32 array, one row per image, L2-normalised when
    ``preprocess.normalize``; ``name`` names the model (the experiment's name), ``description`` says in one
    line which model it is (shown by the service's ``/health``); ``metric`` is the distance it was evaluated
    with (``preprocess.metric``).

    Optional: ``embed_batch(batch)``, the embeddings of an already preprocessed ``N x 3 x H x W`` float32
    array (:meth:`Preprocess.batch`); the service's micro-batcher uses it to run the requests of concurrent
    clients as one model call, and falls back to ``embed_images`` without it.
    """

    name: str
    description: str
    dim: int
    metric: str
    preprocess: Preprocess

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings of ``images`` (N x dim float32)."""
        ...


def check_batch_output(output: np.ndarray, count: int, dim: int, source: str) -> np.ndarray:
    """``output`` as a C-contiguous float32 ``count x dim`` array, or a ``ValueError`` naming ``source``."""
    array = np.ascontiguousarray(np.asarray(output, dtype=np.float32))
    if array.shape != (count, dim):
        raise ValueError(f"{source} returned embeddings of shape {array.shape}, expected ({count}, {dim})")
    return array
