"""An ONNX Runtime embedder for files written by ``centrum export --format onnx`` (needs ``centrum[onnx]``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from centrum.inference.exported import META_DESCRIPTION, META_DIM, META_NAME, META_PREPROCESSING
from centrum.inference.model import Preprocess
from centrum.inference.protocol import check_batch_output


class OnnxEmbedder:
    """Embeds PIL images with an exported ONNX model on ONNX Runtime's CPU provider.

    The file's ``centrum.preprocessing`` metadata (:meth:`~centrum.inference.Preprocess.to_json`) gives the
    transform, so the file alone embeds an image. ``threads`` sets ONNX Runtime's intra-op threads (default:
    the CPU count it sees). Satisfies :class:`~centrum.inference.Embedder`.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise ValueError("ONNX models need onnxruntime: pip install 'centrum[onnx]'") from exc
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        # idle worker threads sleep instead of spinning: on a shared CPU spinning steals time from everything else
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_PREPROCESSING not in meta:
            raise ValueError(f"{path} has no {META_PREPROCESSING} metadata: export it with `centrum export`")
        self.preprocess = Preprocess.from_json(meta[META_PREPROCESSING], str(path))
        self.name = meta.get(META_NAME) or path.name
        self.description = meta.get(META_DESCRIPTION) or self.name
        self.dim = int(meta.get(META_DIM) or self.session.get_outputs()[0].shape[1])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    @property
    def metric(self) -> str:
        """The distance the model was evaluated with (``preprocess.metric``)."""
        return self.preprocess.metric

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings of an already preprocessed ``N x 3 x H x W`` float32 batch."""
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return check_batch_output(out, batch.shape[0], self.dim, self.name)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings (N x dim float32) of RGB ``images`` after the file's stored test transform."""
        if len(images) == 0:
            return np.empty((0, self.dim), np.float32)
        return self.embed_batch(self.preprocess.batch(images))
