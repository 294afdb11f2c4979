"""GoogLeNet (Inception-v1) backbone with torchvision's parameter names: the Symmetrical Synthesis network.

Gu & Ko (2020) use an ImageNet-pretrained GoogLeNet (Szegedy et al. 2015) with a 512-d embedding
layer, as most deep-metric-learning papers of that line do. We implement GoogLeNet rather than
BN-Inception (Inception-v2, Ioffe & Szegedy 2015, used by later papers) because GoogLeNet is the
paper's network and torchvision's release is the one set of published ImageNet weights for it in
PyTorch. That release differs from the 2015 Caffe model in two ways, kept here so that its state
dict loads unchanged:

- every convolution is followed by BatchNorm (eps 0.001): the weights were ported from TF-slim's
  Inception-v1, which has BatchNorm;
- the "5x5" branch of each inception block uses a 3x3 kernel (a known quirk of the port).

The published weights expect inputs scaled to [-1, 1]; with ``transform_input=True`` (the default,
as torchvision sets it for its pretrained model) inputs normalised with the ImageNet mean and std,
which is what centrum's data pipeline produces, are mapped to that range first. The auxiliary
classifiers and ``fc`` are left out: a published ``aux1.*``, ``aux2.*``, ``fc.*`` is reported as
unexpected when loading.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001), ReLU: torchvision's GoogLeNet unit."""

    def __init__(self, in_channels: int, out_channels: int, **conv_options: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_options)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn(conv(x)))``."""
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """An inception block: 1x1, 1x1->3x3, 1x1->3x3 (the "5x5" branch), 3x3 max-pool->1x1, concatenated."""

    def __init__(
        self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1), BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1), BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branches along the channels."""
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class GoogLeNet(nn.Module):
    """GoogLeNet trunk up to ``inception5b``, returning its 1024-channel feature map.

    Args:
        last_stride: stride of the max-pool before ``inception5a`` (2 as published; 1 keeps a twice
            larger final map, the re-id trick applied to this network).
        transform_input: map ImageNet-normalised inputs to the [-1, 1] scaling of the published weights.

    ``forward(x)`` maps B x 3 x H x W to B x 1024 x h x w, h ~ H/32 (7 x 7 at 224 x 224 and 227 x 227).
    """

    def __init__(self, *, last_stride: int = 2, transform_input: bool = True) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        self.last_stride = last_stride
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        # A 2x2 pool with stride 1 would still shrink the map by one pixel; skipping it keeps the size.
        self.maxpool4: nn.Module = nn.MaxPool2d(2, stride=2, ceil_mode=True) if last_stride == 2 else nn.Identity()
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.out_channels: int = self.inception5b.out_channels
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # x_imagenet * std + mean is the [0, 1] image; (that - 0.5) / 0.5 is the published scaling.
        self.register_buffer("_input_scale", std / 0.5, persistent=False)
        self.register_buffer("_input_shift", (mean - 0.5) / 0.5, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the ``inception5b`` feature map of a batch of images (B x 3 x H x W)."""
        if self.transform_input:
            x = x * self._input_scale + self._input_shift
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        x = self.maxpool4(self.inception4e(x))
        return self.inception5b(self.inception5a(x))


def googlenet(*, last_stride: int = 2, transform_input: bool = True) -> GoogLeNet:
    """GoogLeNet with torchvision's parameter names, randomly initialised."""
    return GoogLeNet(last_stride=last_stride, transform_input=transform_input)
