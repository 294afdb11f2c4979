"""Backbones, pooling, the BNNeck embedding head and pretrained weights.

>>> import torch
>>> from centrum.models import build_model
>>> model = build_model("small_cnn", num_classes=10)          # the quick CPU model
>>> out = model(torch.randn(4, 3, 32, 32))                    # {"raw", "bn", "logits"}

- :func:`build_backbone` / :data:`BACKBONES`: ResNet-50 and ResNet50-IBN-a (configurable last stride),
  GoogLeNet (the Symm network), a small CNN, EfficientNet-Lite0 and ``"timm:<name>"``;
- :class:`EmbeddingModel` / :func:`build_model`: pooling (average or :class:`GeneralizedMeanPooling`),
  optional embedding layer, BNNeck and classifier;
- :func:`load_pretrained`, :func:`download_file`: weights from a file or a cached, checksummed URL,
  with a :class:`LoadReport` of missing, unexpected and mismatched keys;
- :func:`prefers_channels_last`: the memory layout a model's convolutions run fastest in on a device.
"""

from centrum.models.embedding import EmbeddingModel, build_model
from centrum.models.layout import has_convolutions, lay_out, prefers_channels_last
from centrum.models.pooling import GeneralizedMeanPooling, GlobalAveragePooling
from centrum.models.registry import BACKBONES, DEFAULT_LAST_STRIDE, build_backbone
from centrum.models.weights import (
    PUBLISHED_WEIGHTS,
    ChecksumError,
    LoadReport,
    default_cache_dir,
    download_file,
    load_pretrained,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_LAST_STRIDE",
    "PUBLISHED_WEIGHTS",
    "ChecksumError",
    "EmbeddingModel",
    "GeneralizedMeanPooling",
    "GlobalAveragePooling",
    "LoadReport",
    "build_backbone",
    "build_model",
    "default_cache_dir",
    "download_file",
    "has_convolutions",
    "lay_out",
    "load_pretrained",
    "prefers_channels_last",
]
