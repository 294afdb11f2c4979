"""Published key layouts: torchvision ResNet-50 / GoogLeNet and the IBN-Net release load with zero missing keys.

The state dicts are built here by hand from the published architectures (not from our modules), and a
functional ResNet forward written with ``torch.nn.functional`` checks that the weights are used the way
torchvision and the IBN-Net release use them (stride on the 3x3 conv, downsample shortcut, IBN split).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from centrum.models import build_backbone, load_pretrained


def _bn(prefix: str, c: int, tracked: bool) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}
    if tracked:
        shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def resnet50_key_shapes(*, ibn: bool = False, tracked: bool = True) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of torchvision's resnet50 (or the IBN-Net release's resnet50_ibn_a)."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64, tracked)}
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), 1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            if ibn and stage < 4:
                half = planes // 2
                shapes[f"{p}.bn1.IN.weight"] = (half,)
                shapes[f"{p}.bn1.IN.bias"] = (half,)
                shapes.update(_bn(f"{p}.bn1.BN", planes - half, tracked))
            else:
                shapes.update(_bn(f"{p}.bn1", planes, tracked))
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes.update(_bn(f"{p}.bn2", planes, tracked))
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            shapes.update(_bn(f"{p}.bn3", planes * 4, tracked))
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", planes * 4, tracked))
            inplanes = planes * 4
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


GOOGLENET_INCEPTIONS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


def googlenet_key_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of torchvision's googlenet (aux classifiers included, as published)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.conv.weight"] = (cout, cin, k, k)
        shapes.update(_bn(f"{name}.bn", cout, True))

    conv("conv1", 3, 64, 7)
    conv("conv2", 64, 64, 1)
    conv("conv3", 64, 192, 3)
    for name, (cin, c1, c3r, c3, c5r, c5, pool) in GOOGLENET_INCEPTIONS.items():
        conv(f"{name}.branch1", cin, c1, 1)
        conv(f"{name}.branch2.0", cin, c3r, 1)
        conv(f"{name}.branch2.1", c3r, c3, 3)
        conv(f"{name}.branch3.0", cin, c5r, 1)
        conv(f"{name}.branch3.1", c5r, c5, 3)  # torchvision's "5x5" branch is 3x3
        conv(f"{name}.branch4.1", cin, pool, 1)
    for aux, cin in (("aux1", 512), ("aux2", 528)):
        conv(f"{aux}.conv", cin, 128, 1)
        shapes.update({f"{aux}.fc1.weight": (1024, 2048), f"{aux}.fc1.bias": (1024,)})
        shapes.update({f"{aux}.fc2.weight": (1000, 1024), f"{aux}.fc2.bias": (1000,)})
    shapes.update({"fc.weight": (1000, 1024), "fc.bias": (1000,)})
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = (
                torch.rand(
                    shape,
                    generator=generator,
                )
                + 0.5
            )
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # norm weights
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            state[key] = torch.randn(shape, generator=generator) * (1.0 / fan_in) ** 0.5
    return state


def reference_resnet50(state: dict[str, torch.Tensor], x: torch.Tensor, last_stride: int, ibn: bool) -> torch.Tensor:
    """ResNet-50 / IBN-a forward in eval mode, written directly from the published definitions."""

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], training=False, eps=1e-5)  # fmt: skip

    def norm1(t: torch.Tensor, p: str, use_ibn: bool) -> torch.Tensor:
        if not use_ibn:
            return bn(t, p)
        half = t.shape[1] // 2
        inst = F.instance_norm(t[:, :half], weight=state[f"{p}.IN.weight"], bias=state[f"{p}.IN.bias"], eps=1e-5)
        return torch.cat([inst, bn(t[:, half:], f"{p}.BN")], 1)

    t = F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    t = F.max_pool2d(t, 3, stride=2, padding=1)
    for stage, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, last_stride), strict=True), 1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            s = stride if b == 0 else 1
            out = F.relu(norm1(F.conv2d(t, state[f"{p}.conv1.weight"]), f"{p}.bn1", ibn and stage < 4))
            out = F.relu(bn(F.conv2d(out, state[f"{p}.conv2.weight"], stride=s, padding=1), f"{p}.bn2"))
            out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            shortcut = t
            if b == 0:
                shortcut = bn(F.conv2d(t, state[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
            t = F.relu(out + shortcut)
    return t


def test_hand_built_torchvision_layout_has_torchvisions_320_entries() -> None:
    # torchvision.models.resnet50().state_dict() has 320 entries (fc and num_batches_tracked included).
    assert len(resnet50_key_shapes()) == 320


@pytest.mark.parametrize(("name", "ibn", "last_stride"), [("resnet50", False, 1), ("resnet50_ibn_a", True, 2)])
def test_published_resnet_layout_loads_completely_and_computes_the_published_forward(
    name: str, ibn: bool, last_stride: int
) -> None:
    generator = torch.Generator().manual_seed(1)
    state = random_state(resnet50_key_shapes(ibn=ibn), generator)
    backbone = build_backbone(name, last_stride=last_stride)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*partly initialised")  # every backbone tensor must load
        report = load_pretrained(backbone, state)
    assert report.missing == [] and report.mismatched == []
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert len(report.loaded) == len(state) - 2
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)

    # Both in float64 on the same (float32) weights, so only the computation is compared.
    x = torch.randn(1, 3, 64, 32, generator=generator, dtype=torch.float64)
    reference = reference_resnet50({k: v.double() for k, v in state.items()}, x, last_stride, ibn)
    with torch.no_grad():
        torch.testing.assert_close(backbone.double().eval()(x), reference, rtol=1e-9, atol=1e-9)


def test_torchvision_v1_file_without_num_batches_tracked_reports_nothing_missing() -> None:
    state = random_state(resnet50_key_shapes(tracked=False), torch.Generator().manual_seed(2))
    report = load_pretrained(build_backbone("resnet50"), state)
    assert report.missing == [] and report.complete


def test_ibn_release_checkpoint_format_with_module_prefix(tmp_path) -> None:
    # The older IBN-Net / strong-baseline files: {"state_dict": {"module.<key>": ...}, "epoch": ..., "arch": ...}.
    state = random_state(resnet50_key_shapes(ibn=True), torch.Generator().manual_seed(3))
    path = tmp_path / "resnet50_ibn_a.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 100, "arch": "ibn"}, path)
    backbone = build_backbone("resnet50_ibn_a")
    report = load_pretrained(backbone, path)
    assert report.missing == [] and sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(backbone.layer2[3].bn1.IN.weight, state["layer2.3.bn1.IN.weight"].float())


def test_torchvision_resnet_into_ibn_a_reports_the_differences() -> None:
    state = random_state(resnet50_key_shapes(), torch.Generator().manual_seed(4))
    with pytest.warns(UserWarning, match="partly initialised"):
        report = load_pretrained(build_backbone("resnet50_ibn_a"), state)
    assert "layer1.0.bn1.IN.weight" in report.missing
    assert "layer1.0.bn1.weight" in report.unexpected
    assert "layer4.0.bn1.weight" in report.loaded


def test_published_googlenet_layout_loads_with_zero_missing_keys() -> None:
    state = random_state(googlenet_key_shapes(), torch.Generator().manual_seed(5))
    backbone = build_backbone("googlenet")
    report = load_pretrained(backbone, state)
    assert report.missing == [] and report.mismatched == []
    assert {k.split(".")[0] for k in report.unexpected} == {"aux1", "aux2", "fc"}
    torch.testing.assert_close(
        backbone.inception4e.branch3[1].conv.weight, state["inception4e.branch3.1.conv.weight"].float()
    )


def test_googlenet_transform_input_maps_imagenet_normalisation_to_minus_one_one() -> None:
    backbone = build_backbone("googlenet")
    image = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (image - mean) / std
    mapped = normalised * backbone._input_scale + backbone._input_shift
    torch.testing.assert_close(mapped, (image - 0.5) / 0.5)
