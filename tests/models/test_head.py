"""EmbeddingModel: BNNeck, classifier, embedding layer, pooling (average and GeM)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from centrum.models import EmbeddingModel, GeneralizedMeanPooling, GlobalAveragePooling, build_model


class MapBackbone(nn.Module):
    """A 1x1-convolution 'backbone' with a chosen number of output channels."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels, kernel_size=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_ctl_model_outputs() -> None:
    model = EmbeddingModel(MapBackbone(32), num_classes=7)
    out = model(torch.randn(4, 3, 8, 4))
    assert set(out) == {"raw", "bn", "logits"}
    assert out["raw"].shape == out["bn"].shape == (4, 32) and out["logits"].shape == (4, 7)
    assert model.feature_dim == 32


def test_logits_come_from_the_bn_feature_with_bnneck_and_from_raw_without() -> None:
    x = torch.randn(4, 3, 8, 4)
    with_neck = EmbeddingModel(MapBackbone(16), num_classes=5)
    out = with_neck(x)
    torch.testing.assert_close(out["logits"], F.linear(out["bn"], with_neck.classifier.weight))
    expected_bn = (out["raw"] - out["raw"].mean(0)) / torch.sqrt(out["raw"].var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out["bn"], expected_bn, atol=1e-5, rtol=1e-4)  # training-mode BatchNorm, bias 0

    without = EmbeddingModel(MapBackbone(16), num_classes=5, bnneck=False)
    out = without(x)
    assert set(out) == {"raw", "logits"}
    torch.testing.assert_close(out["logits"], F.linear(out["raw"], without.classifier.weight))


def test_no_classifier_without_num_classes() -> None:
    model = EmbeddingModel(MapBackbone(8))
    assert model.classifier is None and set(model(torch.randn(2, 3, 4, 4))) == {"raw", "bn"}


def test_embed_returns_the_bn_feature_in_eval_and_raw_without_bnneck() -> None:
    x = torch.randn(3, 3, 8, 4)
    model = EmbeddingModel(MapBackbone(16), num_classes=5)
    model.train()(torch.randn(8, 3, 8, 4))  # move the running statistics away from (0, 1)
    model.eval()
    out = model(x)
    torch.testing.assert_close(model.embed(x), out["bn"])
    stats = model.bnneck
    expected = (out["raw"] - stats.running_mean) / torch.sqrt(stats.running_var + stats.eps) * stats.weight
    torch.testing.assert_close(model.embed(x), expected)
    plain = EmbeddingModel(MapBackbone(16), bnneck=False).eval()
    torch.testing.assert_close(plain.embed(x), plain(x)["raw"])


def test_bnneck_bias_is_frozen_at_zero() -> None:
    model = EmbeddingModel(MapBackbone(16), num_classes=4)
    assert not model.bnneck.bias.requires_grad
    assert model.bnneck.weight.requires_grad
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0, weight_decay=0.1)
    weight_before = model.bnneck.weight.detach().clone()
    for _ in range(3):
        out = model(torch.randn(6, 3, 4, 4))
        loss = F.cross_entropy(out["logits"], torch.tensor([0, 1, 2, 3, 0, 1])) + out["raw"].pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert torch.all(model.bnneck.bias == 0)
    assert not torch.equal(model.bnneck.weight, weight_before)


def test_classifier_has_no_bias_and_is_initialised_with_std_0_001() -> None:
    model = EmbeddingModel(MapBackbone(2048), num_classes=751)
    weight = model.classifier.weight
    assert model.classifier.bias is None and weight.shape == (751, 2048)
    assert abs(weight.std().item() - 0.001) < 0.00002  # 1.5 M samples: the std estimate is within 0.1 %
    assert abs(weight.mean().item()) < 0.00001


def test_embedding_layer_sets_the_raw_feature() -> None:
    model = EmbeddingModel(MapBackbone(64), embedding_dim=12, bnneck=False, num_classes=3)
    x = torch.randn(2, 3, 5, 5)
    out = model(x)
    assert model.feature_dim == 12 and out["raw"].shape == (2, 12)
    pooled = model.backbone(x).mean((2, 3))
    torch.testing.assert_close(out["raw"], model.embedding(pooled))


def test_symm_protocol_model() -> None:
    model = build_model("googlenet", embedding_dim=512, bnneck=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 227, 227))
    assert set(out) == {"raw"} and out["raw"].shape == (1, 512)


def test_gem_and_average_pooling_on_a_hand_made_map() -> None:
    feature_map = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]], [[0.0, 0.0], [0.0, 8.0]]]])
    avg = GlobalAveragePooling()(feature_map)
    gem = GeneralizedMeanPooling(p=3.0)(feature_map)
    torch.testing.assert_close(avg, torch.tensor([[2.5, 5.0, 2.0]]))
    # (mean of cubes) ** (1/3): (1 + 8 + 27 + 64) / 4 = 25; constant 5 stays 5; 512 / 4 = 128.
    torch.testing.assert_close(gem, torch.tensor([[25.0 ** (1 / 3), 5.0, 128.0 ** (1 / 3)]]))


def test_gem_limits_and_learnable_exponent() -> None:
    x = torch.rand(2, 4, 3, 3) + 0.1
    torch.testing.assert_close(GeneralizedMeanPooling(p=1.0)(x), x.mean((2, 3)))
    max_pooled = x.amax((2, 3))
    high = GeneralizedMeanPooling(p=200.0)(x)
    assert torch.all(high <= max_pooled + 1e-5) and torch.all(high > 0.98 * max_pooled)
    learnable = GeneralizedMeanPooling(p=3.0, learnable=True)
    assert isinstance(learnable.p, nn.Parameter)
    learnable(x).sum().backward()
    assert learnable.p.grad is not None and learnable.p.grad.abs() > 0
    assert "p" not in dict(GeneralizedMeanPooling().named_parameters())


def test_gem_pooling_in_the_model() -> None:
    model = EmbeddingModel(MapBackbone(8), pooling="gem")
    x = torch.randn(2, 3, 4, 4)
    feature_map = model.backbone(x).clamp_min(1e-6)
    torch.testing.assert_close(model(x)["raw"], feature_map.pow(3).mean((2, 3)).pow(1 / 3))


def test_build_model_defaults_are_the_ctl_model() -> None:
    model = build_model(num_classes=10).eval()
    assert model.backbone.last_stride == 1 and model.feature_dim == 2048
    assert isinstance(model.pooling, GlobalAveragePooling) and model.embedding is None
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 128))
    assert out["raw"].shape == out["bn"].shape == (1, 2048) and out["logits"].shape == (1, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "max"}, "unknown pooling 'max'; choose one of avg, gem"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"embedding_dim": -3}, "embedding_dim must be a positive integer"),
        ({"num_classes": 2.5}, "num_classes must be a positive integer"),
    ],
)
def test_bad_head_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddingModel(MapBackbone(4), **kwargs)
    with pytest.raises(ValueError, match=message):
        build_model("small_cnn", **kwargs)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="out_channels"):
        EmbeddingModel(nn.Identity())
    model = EmbeddingModel(MapBackbone(4))
    with pytest.raises(ValueError, match=r"B x C x H x W, got \(3, 8, 8\)"):
        model(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="GeM exponent p must be > 0"):
        GeneralizedMeanPooling(p=0.0)
    with pytest.raises(ValueError, match="feature map of shape B x C x h x w"):
        GeneralizedMeanPooling()(torch.randn(2, 3))
