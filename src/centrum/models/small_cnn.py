"""A small convolutional backbone for quick CPU runs (Fashion-MNIST, Omniglot, tests).

Each stage is one 3x3 convolution with stride 2, BatchNorm and ReLU; the default widths (32, 64, 128)
take a 32 x 32 image to a 128 x 4 x 4 map in about 2.6 M multiply-adds, so an epoch of Fashion-MNIST
(60,000 images) trains in under 20 s on one CPU thread (``benchmarks/models_throughput.py``).
Grey images are fed as three identical channels, like every other backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

SMALL_CNN_WIDTHS: tuple[int, ...] = (32, 64, 128)


class SmallCNN(nn.Module):
    """A stack of ``conv3x3(stride 2) - BatchNorm - ReLU`` stages returning the last feature map.

    Args:
        widths: output channels of each stage.
        last_stride: stride of the last stage (2 by default; 1 keeps a twice larger final map).
        in_channels: channels of the input images.

    ``forward(x)`` maps B x in_channels x H x W to B x widths[-1] x ceil(H/s) x ceil(W/s) with
    s = 2 ** (len(widths) - 1) * last_stride.
    """

    def __init__(self, widths: Sequence[int] = SMALL_CNN_WIDTHS, *, last_stride: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive channel counts, got {widths!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels!r}")
        self.last_stride = last_stride
        stages = []
        channels = in_channels
        for index, width in enumerate(widths):
            stride = last_stride if index == len(widths) - 1 else 2
            stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, kernel_size=3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            channels = width
        self.stages = nn.Sequential(*stages)
        self.out_channels: int = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last stage's feature map of a batch of images."""
        return self.stages(x)


def small_cnn(*, last_stride: int = 2, widths: Sequence[int] = SMALL_CNN_WIDTHS, in_channels: int = 3) -> SmallCNN:
    """The small CPU backbone (:class:`SmallCNN`), randomly initialised."""
    return SmallCNN(widths, last_stride=last_stride, in_channels=in_channels)
