"""Which memory layout a model's convolutions run fastest in, on which device.

Channels-last (NHWC) lets cuDNN use its tensor-core kernels on CUDA, and lets oneDNN on the CPU run convolutions
(depthwise ones above all: EfficientNet's and MobileNet's inverted residual blocks) as vector loops over the
channels instead of channel-strided scans. Measured on this project's 2-core CPU (``python
benchmarks/models_throughput.py --layout``), as the time of channels-last over contiguous for a training step:
EfficientNet-Lite0 0.59 (48x48) and 0.66 (128x128), the small CNN 0.76-0.79, ResNet-50 0.90 (0.90-1.07 over
runs). Hence the rule of :func:`prefers_channels_last`, behind ``trainer.channels_last: auto``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["has_convolutions", "lay_out", "prefers_channels_last"]

#: devices whose convolution libraries have channels-last kernels (cuDNN, oneDNN)
CHANNELS_LAST_DEVICES = ("cuda", "cpu")


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-d convolution (a CNN backbone, or a transformer's patch embedding)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prefers_channels_last(model: nn.Module, device: torch.device | str) -> bool:
    """The layout rule behind ``trainer.channels_last: auto``: channels-last for a model with 2-d convolutions on
    CUDA or the CPU (cuDNN's and oneDNN's channels-last kernels are the faster ones there), else the default
    contiguous layout.

    >>> from centrum.models import build_model
    >>> prefers_channels_last(build_model("small_cnn"), "cpu")
    True
    >>> prefers_channels_last(torch.nn.Linear(4, 2), "cpu")
    False
    """
    return torch.device(device).type in CHANNELS_LAST_DEVICES and has_convolutions(model)


def lay_out(model: nn.Module, device: torch.device | str, channels_last: bool | None = None) -> bool:
    """Put ``model``'s 4-d weights in channels-last (``channels_last=True``) or contiguous (False) memory format,
    in place; None follows :func:`prefers_channels_last` for ``device``. Returns whether it is channels-last, so
    the caller can lay its inputs out to match. Training, checkpoint loading and the embedder share this rule, so
    a reloaded model computes bit for bit what the trained one did."""
    if channels_last is None:
        channels_last = prefers_channels_last(model, device)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return bool(channels_last)
