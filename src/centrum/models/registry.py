"""The backbone registry: build a backbone by name, optionally with pretrained weights."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from centrum.models.efficientnet import efficientnet_lite0, efficientnet_lite0_weights_path
from centrum.models.googlenet import googlenet
from centrum.models.resnet import resnet50, resnet50_ibn_a
from centrum.models.small_cnn import small_cnn
from centrum.models.timm_backbone import TIMM_PREFIX, TimmBackbone
from centrum.models.weights import PUBLISHED_WEIGHTS, load_pretrained

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet50": resnet50,
    "resnet50_ibn_a": resnet50_ibn_a,
    "googlenet": googlenet,
    "small_cnn": small_cnn,
    "efficientnet_lite0": efficientnet_lite0,
}
"""Backbone factories by name; each takes ``last_stride`` and returns a module with ``out_channels``.
``"timm:<model_name>"`` is accepted by :func:`build_backbone` on top of these when timm imports."""

DEFAULT_LAST_STRIDE: dict[str, int] = {
    # The CTL / BNNeck re-id recipe: a 16 x 8 map for 256 x 128 inputs.
    "resnet50": 1,
    "resnet50_ibn_a": 1,
    # The published networks: GoogLeNet as in the Symmetrical Synthesis protocol, EfficientNet-Lite0 as
    # released, and the small CNN at its cheapest.
    "googlenet": 2,
    "small_cnn": 2,
    "efficientnet_lite0": 2,
}
"""The stride of the last stage used when ``last_stride`` is not given."""

IMAGENET = "imagenet"


def _known_names() -> str:
    return ", ".join([*BACKBONES, f"{TIMM_PREFIX}<model_name>"])


def build_backbone(
    name: str,
    *,
    pretrained: str | Path | None = None,
    last_stride: int | None = None,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    **options: Any,
) -> nn.Module:
    """Build the backbone called ``name``: a module mapping B x 3 x H x W images to a B x C x h x w map.

    Args:
        name: a key of :data:`BACKBONES`, or ``"timm:<model_name>"`` for any timm model.
        pretrained: ``None`` (random initialisation), ``"imagenet"`` (the published weights: torchvision's
            for resnet50 and googlenet, the IBN-Net release for resnet50_ibn_a, downloaded once with their
            checksum; the packaged file for efficientnet_lite0; timm's own for timm models), or a local
            file / URL of a checkpoint, loaded with :func:`~centrum.models.load_pretrained`.
        last_stride: stride of the last stage, 1 or 2; ``None`` takes :data:`DEFAULT_LAST_STRIDE`
            (1 for the ResNets as in the re-id recipe, 2 for the others as published).
        sha256: expected SHA-256 (or 8+ hex prefix) of a ``pretrained`` file or URL.
        cache_dir: download cache (default ``$CENTRUM_CACHE`` or ``~/.cache/centrum``).
        **options: passed to the backbone factory (``widths`` for small_cnn, ``transform_input`` for
            googlenet, ``drop_connect_rate`` for efficientnet_lite0, keyword arguments of
            ``timm.create_model``).

    The module has an ``out_channels`` attribute (C).
    """
    if not isinstance(name, str):
        raise ValueError(f"backbone name must be a string, got {type(name).__name__}")
    if name.startswith(TIMM_PREFIX):
        return _build_timm(name[len(TIMM_PREFIX) :], pretrained, last_stride, sha256, cache_dir, options)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {_known_names()}")
    if last_stride is None:
        last_stride = DEFAULT_LAST_STRIDE[name]
    try:
        backbone = BACKBONES[name](last_stride=last_stride, **options)
    except TypeError as exc:
        raise ValueError(f"invalid options {sorted(options)} for backbone {name!r}: {exc}") from exc
    if pretrained is None:
        return backbone
    if pretrained == IMAGENET:
        if name == "efficientnet_lite0":
            load_pretrained(backbone, efficientnet_lite0_weights_path(), sha256=sha256)
        elif name in PUBLISHED_WEIGHTS:
            published = PUBLISHED_WEIGHTS[name]
            load_pretrained(backbone, published.url, sha256=sha256 or published.sha256, cache_dir=cache_dir)
        else:
            with_weights = ", ".join([*PUBLISHED_WEIGHTS, "efficientnet_lite0"])
            raise ValueError(f"backbone {name!r} has no published ImageNet weights; these do: {with_weights}")
    else:
        load_pretrained(backbone, pretrained, sha256=sha256, cache_dir=cache_dir)
    return backbone


def _build_timm(
    model_name: str,
    pretrained: str | Path | None,
    last_stride: int | None,
    sha256: str | None,
    cache_dir: Path | None,
    options: dict[str, Any],
) -> nn.Module:
    if not model_name:
        raise ValueError(f"give a timm model name after {TIMM_PREFIX!r}, e.g. 'timm:resnet50'")
    if last_stride not in (None, 2):
        # Recipes pass their last_stride to every backbone; refusing would make timm models unusable there.
        warnings.warn(
            f"last_stride={last_stride} is ignored for timm model {model_name!r}: timm models have no common "
            f"handle on it; pass output_stride in the backbone options for the models that support it",
            stacklevel=3,
        )
    backbone = TimmBackbone(model_name, pretrained=pretrained == IMAGENET, **options)
    if pretrained is not None and pretrained != IMAGENET:
        load_pretrained(backbone.model, pretrained, sha256=sha256, cache_dir=cache_dir)
    return backbone
