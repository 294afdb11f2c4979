"""The embedder lays a CNN out channels-last where that is faster (the CPU, CUDA) and its embeddings equal the
contiguous model's within rounding; an export keeps contiguous weights."""

from __future__ import annotations

import copy

import numpy as np
import torch

from centrum.inference import Preprocess, TorchEmbedder
from centrum.models import build_model


def _conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]


def test_channels_last_embeddings_equal_the_contiguous_ones():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", embedding_dim=16).eval()
    preprocess = Preprocess(recipe="dml", input_size=(48, 48), resize=48)
    auto = TorchEmbedder(copy.deepcopy(model), preprocess)
    plain = TorchEmbedder(copy.deepcopy(model), preprocess, channels_last=False)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(auto.model))
    assert not all(w.is_contiguous() for w in _conv_weights(auto.model))  # (a depthwise 1-channel filter is both)
    assert all(w.is_contiguous() for w in _conv_weights(plain.model))
    images = torch.randn(6, 3, 48, 48)
    np.testing.assert_allclose(auto.embed_tensor(images), plain.embed_tensor(images), atol=1e-5)
