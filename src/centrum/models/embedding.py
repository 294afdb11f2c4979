"""The embedding model: backbone, global pooling, optional embedding layer, BNNeck and classifier.

The BNNeck (Luo et al. 2019, "Bag of Tricks and A Strong Baseline for Deep Person Re-identification")
puts a BatchNorm1d between the feature the metric losses see ("raw") and the classifier: the
triplet-style losses act on the free Euclidean space of the raw feature, the identity cross-entropy on
its normalised version ("bn"), which is also the inference feature. The BatchNorm's bias is frozen at
zero and the classifier has no bias, so the classifier's decision boundaries pass through the origin
of the normalised space, where cosine retrieval happens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from centrum.models.pooling import POOLINGS, build_pooling
from centrum.models.registry import build_backbone

CLASSIFIER_INIT_STD = 0.001


def _check_positive_int(value: int | None, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


class EmbeddingModel(nn.Module):
    """Backbone -> pooling -> [embedding layer] -> "raw" -> [BNNeck -> "bn"] -> [classifier -> "logits"].

    Args:
        backbone: a module returning a B x C x h x w feature map and exposing ``out_channels`` (C).
        num_classes: add a classifier ``Linear(feature_dim, num_classes, bias=False)`` initialised from
            N(0, 0.001^2), applied to the BN feature when ``bnneck`` else to the raw feature.
        pooling: ``"avg"`` (global average) or ``"gem"`` (generalised mean, p = 3).
        embedding_dim: add ``Linear(C, embedding_dim)`` after pooling (e.g. 512 for the Symm protocol's
            GoogLeNet); its output is then the raw feature.
        bnneck: add the BNNeck, ``BatchNorm1d(feature_dim)`` with its bias frozen at 0.

    ``forward(x)`` returns a dict: ``"raw"`` (B x feature_dim, for the metric losses), ``"bn"`` (when
    ``bnneck``) and ``"logits"`` (when ``num_classes``). :meth:`embed` returns the inference feature.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int | None = None,
        pooling: str = "avg",
        embedding_dim: int | None = None,
        bnneck: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int(num_classes, "num_classes")
        _check_positive_int(embedding_dim, "embedding_dim")
        in_channels = getattr(backbone, "out_channels", None)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(
                f"backbone {type(backbone).__name__} must expose its feature-map channels as an integer "
                f"attribute out_channels, got {in_channels!r}"
            )
        self.backbone = backbone
        self.pooling = build_pooling(pooling)
        self.embedding: nn.Linear | None = None
        if embedding_dim is not None:
            self.embedding = nn.Linear(in_channels, embedding_dim)
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
        self.feature_dim: int = embedding_dim if embedding_dim is not None else in_channels
        self.num_classes = num_classes
        self.bnneck: nn.BatchNorm1d | None = None
        if bnneck:
            self.bnneck = nn.BatchNorm1d(self.feature_dim)
            nn.init.ones_(self.bnneck.weight)
            nn.init.zeros_(self.bnneck.bias)
            self.bnneck.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        if num_classes is not None:
            self.classifier = nn.Linear(self.feature_dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, mean=0.0, std=CLASSIFIER_INIT_STD)

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected a batch of images of shape B x C x H x W, got {shape}")
        feature = self.pooling(self.backbone(x))
        if self.embedding is not None:
            feature = self.embedding(feature)
        return feature

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{"raw", "bn" (with BNNeck), "logits" (with a classifier)}`` for a batch of images."""
        raw = self._raw(x)
        out = {"raw": raw}
        head_input = raw
        if self.bnneck is not None:
            out["bn"] = head_input = self.bnneck(raw)
        if self.classifier is not None:
            out["logits"] = self.classifier(head_input)
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The inference feature: the BN feature with BNNeck, else the raw feature (not L2-normalised).

        Call ``model.eval()`` first so that the BNNeck uses its running statistics.
        """
        raw = self._raw(x)
        return self.bnneck(raw) if self.bnneck is not None else raw


def build_model(
    backbone: str = "resnet50",
    *,
    num_classes: int | None = None,
    pooling: str = "avg",
    embedding_dim: int | None = None,
    bnneck: bool = True,
    pretrained: str | Path | None = None,
    last_stride: int | None = None,
    **backbone_options: Any,
) -> EmbeddingModel:
    """Build an :class:`EmbeddingModel` on the backbone called ``backbone`` (see :func:`build_backbone`).

    The defaults are the CTL model: ResNet-50 with last stride 1, average pooling, no embedding layer
    (2048-d raw feature) and a BNNeck; ``pretrained="imagenet"`` loads the published weights. The Symm
    protocol is ``build_model("googlenet", embedding_dim=512, bnneck=False, pretrained="imagenet")``.
    ``backbone_options`` (``sha256``, ``cache_dir``, family options) go to :func:`build_backbone`.
    """
    # Check the head's arguments before a backbone download can happen.
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    _check_positive_int(num_classes, "num_classes")
    _check_positive_int(embedding_dim, "embedding_dim")
    net = build_backbone(backbone, pretrained=pretrained, last_stride=last_stride, **backbone_options)
    return EmbeddingModel(net, num_classes=num_classes, pooling=pooling, embedding_dim=embedding_dim, bnneck=bnneck)
