"""ResNet-50 and ResNet50-IBN-a backbones with torchvision's and the IBN-Net release's parameter names.

Both are plain-torch re-implementations of the published networks (no torchvision import). The
parameter names are exactly torchvision's (``conv1``, ``bn1``, ``layer1`` .. ``layer4`` of
``Bottleneck`` blocks with ``conv1/bn1/conv2/bn2/conv3/bn3/downsample.0/.1``), so the published
state dicts load with zero missing keys; the classifier ``fc`` is left out because a backbone returns
the last feature map, and a published ``fc.*`` is reported as unexpected by
:func:`centrum.models.load_pretrained`.

The stride of a bottleneck sits on its 3x3 convolution ("ResNet v1.5"), as in torchvision and in the
IBN-Net release. ``last_stride=1`` removes the down-sampling of ``layer4`` (Luo et al. 2019), which
doubles the height and width of the final map: 16 x 8 instead of 8 x 4 for a 256 x 128 input.
"""

from __future__ import annotations

import torch
from torch import nn

RESNET50_LAYERS: tuple[int, int, int, int] = (3, 4, 6, 3)


class InstanceBatchNorm2d(nn.Module):
    """IBN-a normalisation: InstanceNorm on the first half of the channels, BatchNorm on the rest.

    Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net" (ECCV
    2018). Parameter names ``IN`` and ``BN`` follow the authors' release, so its checkpoints load as is.
    """

    def __init__(self, channels: int, instance_ratio: float = 0.5) -> None:
        super().__init__()
        self.instance_channels = int(channels * instance_ratio)
        self.IN = nn.InstanceNorm2d(self.instance_channels, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.instance_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B x C x H x W) per instance on the first channels, per batch on the others."""
        first, second = torch.split(x, [self.instance_channels, x.shape[1] - self.instance_channels], dim=1)
        return torch.cat((self.IN(first.contiguous()), self.BN(second.contiguous())), dim=1)


class Bottleneck(nn.Module):
    """The ResNet-50 bottleneck: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand x4, identity shortcut.

    With ``ibn=True`` the first normalisation is :class:`InstanceBatchNorm2d` (IBN-a).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, ibn: bool = False) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1: nn.Module = InstanceBatchNorm2d(planes) if ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update ``relu(F(x) + shortcut(x))``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A bottleneck ResNet trunk (stem + four stages) returning the ``layer4`` feature map.

    Args:
        layers: blocks per stage; ``(3, 4, 6, 3)`` is ResNet-50.
        last_stride: stride of ``layer4`` (1 or 2).
        ibn: use IBN-a (:class:`InstanceBatchNorm2d` as ``bn1`` of every block in ``layer1`` to ``layer3``).

    ``forward(x)`` maps B x 3 x H x W to B x 2048 x ceil(H/s) x ceil(W/s), s = 16 * last_stride.
    """

    def __init__(self, layers: tuple[int, ...] = RESNET50_LAYERS, *, last_stride: int = 1, ibn: bool = False) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        self.last_stride = last_stride
        self.ibn = ibn
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        stages = []
        for index, (planes, blocks, stride) in enumerate(
            zip((64, 128, 256, 512), layers, (1, 2, 2, last_stride), strict=True)
        ):
            # IBN-a puts instance normalisation in the first three stages only: the last stage must stay
            # discriminative, while the shallow ones gain appearance invariance.
            use_ibn = ibn and index < 3
            stage = [Bottleneck(in_channels, planes, stride=stride, ibn=use_ibn)]
            in_channels = planes * Bottleneck.expansion
            stage += [Bottleneck(in_channels, planes, ibn=use_ibn) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels: int = in_channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the ``layer4`` feature map of a batch of images (B x 3 x H x W)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet50(*, last_stride: int = 1) -> ResNet:
    """ResNet-50 (He et al. 2016) with torchvision's parameter names, randomly initialised."""
    return ResNet(RESNET50_LAYERS, last_stride=last_stride, ibn=False)


def resnet50_ibn_a(*, last_stride: int = 1) -> ResNet:
    """ResNet50-IBN-a (Pan et al. 2018) with the IBN-Net release's parameter names, randomly initialised."""
    return ResNet(RESNET50_LAYERS, last_stride=last_stride, ibn=True)
