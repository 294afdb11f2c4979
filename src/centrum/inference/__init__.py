"""Inference apart from training (no Lightning): a trained model back from its checkpoint, and embeddings of
images, files, folders, a :class:`~centrum.data.SampleList` or a dataset's splits.

>>> from centrum.inference import TorchEmbedder                      # doctest: +SKIP
>>> embedder = TorchEmbedder.from_checkpoint("runs/x/model.ckpt", device="cpu", flip=True)  # doctest: +SKIP
>>> vectors = embedder.embed_images([image])  # (1, embedder.dim) float32, L2-normalised  # doctest: +SKIP

- :mod:`~centrum.inference.model`: :func:`load_model` (safe loading), :class:`Preprocess`, :func:`resolve_device`;
- :mod:`~centrum.inference.embedder`: :class:`TorchEmbedder`;
- :mod:`~centrum.inference.embeddings`: embedding loaders, "query then gallery", evaluation of a model;
- :mod:`~centrum.inference.images`: files and folders to a SampleList with class names;
- :mod:`~centrum.inference.onnx_runtime`: :class:`OnnxEmbedder`, an exported model on ONNX Runtime (extra ``onnx``);
- :mod:`~centrum.inference.shards`: a large collection embedded in resumable shards with a manifest;
- :mod:`~centrum.inference.ray_runner`: the same shards embedded by a pool of Ray actors (extra ``ray``).
"""

from centrum.inference.embedder import TorchEmbedder
from centrum.inference.embeddings import (
    DEFAULT_PROTOCOLS,
    Embeddings,
    embed_batch,
    embed_loader,
    embed_query_gallery,
    embed_samples,
    evaluate_embeddings,
    evaluate_model,
    protocol_arrays,
)
from centrum.inference.images import collect_images
from centrum.inference.model import (
    CHECKPOINT_FORMAT,
    Preprocess,
    TrainedModel,
    build_model_from_config,
    load_model,
    read_checkpoint,
    resolve_device,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_PROTOCOLS",
    "Embeddings",
    "Preprocess",
    "TorchEmbedder",
    "TrainedModel",
    "build_model_from_config",
    "collect_images",
    "embed_batch",
    "embed_loader",
    "embed_query_gallery",
    "embed_samples",
    "evaluate_embeddings",
    "evaluate_model",
    "load_model",
    "protocol_arrays",
    "read_checkpoint",
    "resolve_device",
]
