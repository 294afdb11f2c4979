"""A PyTorch embedder from a ``centrum train`` checkpoint (the one file to swap for ``centrum.inference``'s)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from centrum.serving.embedder import Preprocessing, check_batch_output, preprocessing_from_config


class EmbeddingHead(nn.Module):
    """The model's inference feature (``model.embed``: BNNeck feature, else raw), L2-normalised when asked.

    This is exactly what ``centrum embed`` writes and what the exporter puts into ONNX/TorchScript files.
    """

    def __init__(self, model: nn.Module, l2_normalize: bool = True) -> None:
        super().__init__()
        self.model = model
        self.l2_normalize = l2_normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` normalised images -> ``B x D`` embeddings."""
        features = self.model.embed(images)
        if self.l2_normalize:
            features = nn.functional.normalize(features, p=2.0, dim=1, eps=1e-12)
        return features


class TorchEmbedder:
    """Embeds PIL images with a trained model in eval mode, on ``device``, without Lightning at inference."""

    def __init__(self, model: nn.Module, preprocess: Preprocessing, name: str, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.head = EmbeddingHead(model, preprocess.l2_normalized).to(self.device).eval()
        self.preprocess = preprocess
        self.name = name
        self.metric = preprocess.metric
        self.dim = int(model.feature_dim)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> TorchEmbedder:
        """Load a checkpoint written by ``centrum train`` (``ValueError``/``FileNotFoundError`` on a bad file)."""
        from centrum.training.checkpoint import load_trained_model

        trained = load_trained_model(path, map_location=device)
        preprocess = preprocessing_from_config(trained.config)
        name = f"{trained.config.name} ({trained.config.model.backbone}, {Path(path).name})"
        return cls(trained.model, preprocess, name, device)

    @torch.inference_mode()
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings of an already preprocessed ``N x 3 x H x W`` float32 batch."""
        out = self.head(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        return check_batch_output(out, batch.shape[0], self.dim, self.name)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings (N x dim float32) of RGB ``images`` after the checkpoint's test transform."""
        if not images:
            return np.empty((0, self.dim), np.float32)
        return self.embed_batch(self.preprocess.batch(images))
