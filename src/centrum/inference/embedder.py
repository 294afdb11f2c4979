"""The :class:`TorchEmbedder`: images (PIL images, files, folders, a SampleList, a dataset's splits) to
embeddings with a trained model. Its API needs no config file and no run folder: a checkpoint, or a model
and its :class:`~centrum.inference.Preprocess`. :class:`EmbeddingHead` is the model as it computes an
embedding: what the embedder runs and what ``centrum export`` writes to ONNX/TorchScript."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from centrum.data import DatasetSplits, ImageDataset, SampleList, collate_skip_none
from centrum.distances import l2_normalize
from centrum.inference.embeddings import Embeddings, embed_batch, embed_query_gallery, embed_samples
from centrum.inference.images import collect_images
from centrum.inference.model import Preprocess, load_model, resolve_device
from centrum.inference.protocol import check_batch_output
from centrum.models import lay_out


class EmbeddingHead(nn.Module):
    """Preprocessed images (``B x 3 x H x W``) to embeddings (``B x D``): the model's inference feature
    (``model.embed``: the BNNeck feature, else the raw one), with ``flip`` the mean of the features of the
    images and their horizontal mirrors, L2-normalised when ``normalize``."""

    def __init__(self, model: nn.Module, normalize: bool = True, flip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.normalize = bool(normalize)
        self.flip = bool(flip)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` normalised images -> ``B x D`` float32 embeddings."""
        features = embed_batch(self.model, images, self.flip)
        return l2_normalize(features) if self.normalize else features


class TorchEmbedder:
    """Embeds images with a PyTorch embedding model: float32 rows, L2-normalised (``preprocess.normalize``).

    ``flip=True`` averages the features of each image and of its horizontal mirror before normalising
    (test-time augmentation). ``name`` names the model (the experiment's name for a checkpoint),
    ``description`` says in one line which model it is (default: ``name``); ``metric`` is the distance the
    model was evaluated with (``preprocess.metric``). ``channels_last`` lays the model out channels-last
    (None: where it is faster, :func:`centrum.models.prefers_channels_last`: a CNN on the CPU or CUDA; the
    embeddings equal the contiguous model's within rounding). Satisfies :class:`~centrum.inference.Embedder`.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        device: str | torch.device | None = "cpu",
        *,
        name: str = "model",
        description: str | None = None,
        flip: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        on_error: str = "raise",
        channels_last: bool | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        lay_out(self.model, self.device, channels_last)
        self.preprocess = preprocess
        self.name = name
        self.description = description or name
        self.head = EmbeddingHead(self.model, preprocess.normalize, bool(flip)).eval()
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.on_error = on_error
        self._transform = preprocess.transform()
        self._dim: int | None = getattr(model, "feature_dim", None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = "cpu", **options) -> TorchEmbedder:
        """The embedder of a ``centrum train`` checkpoint (loaded safely; see :func:`load_model`).

        ``options``: ``flip``, ``batch_size``, ``num_workers``, ``on_error``, ``channels_last`` of the
        constructor; the batch size and the unreadable-image policy default to the checkpoint's config
        (``data.test_batch_size``, ``data.on_error``).
        """
        trained = load_model(path, device)
        data = trained.config.get("data") or {}
        options.setdefault("batch_size", int(data.get("test_batch_size", 64)))
        options.setdefault("on_error", str(data.get("on_error", "raise")))
        name = str(trained.config.get("name", Path(path).stem))
        backbone = (trained.config.get("model") or {}).get("backbone", "?")
        return cls(
            trained.model,
            trained.preprocess,
            device,
            name=name,
            description=f"{name} ({backbone}, {Path(path).name})",
            **options,
        )

    @property
    def flip(self) -> bool:
        """Test-time augmentation: average each image's features with its horizontal mirror's."""
        return self.head.flip

    @flip.setter
    def flip(self, value: bool) -> None:
        self.head.flip = bool(value)

    @property
    def metric(self) -> str:
        """The distance the model was evaluated with (``preprocess.metric``)."""
        return self.preprocess.metric

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        if self._dim is None:
            height, width = self.preprocess.input_size
            with torch.no_grad():
                self._dim = int(self.model.embed(torch.zeros(1, 3, height, width, device=self.device)).shape[1])
        return self._dim

    @torch.inference_mode()
    def embed_tensor(self, images: torch.Tensor) -> np.ndarray:
        """Embeddings (N x D float32) of a batch of already preprocessed images (N x 3 x H x W)."""
        return self.head(images.to(self.device)).cpu().numpy().astype(np.float32, copy=False)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (N x D float32) of an already preprocessed ``N x 3 x H x W`` float32 array
        (:meth:`~centrum.inference.Preprocess.batch`): what the service's micro-batcher calls."""
        out = self.embed_tensor(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return check_batch_output(out, batch.shape[0], self.dim, self.name)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings (N x D float32) of PIL images (converted to RGB), in order."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = [self._transform(im.convert("RGB")) for im in images[start : start + self.batch_size]]
            out.append(self.embed_tensor(torch.stack(chunk)))
        return np.concatenate(out)

    def embed_samples(self, samples: SampleList) -> Embeddings:
        """Embed a :class:`~centrum.data.SampleList`; the rows keep its labels, cameras and paths (images
        skipped as unreadable under ``on_error="skip"`` are absent)."""
        loader = DataLoader(
            ImageDataset(samples, self._transform, on_error=self.on_error),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_skip_none,
        )
        result = embed_samples(self.model, samples, loader, self.device, self.preprocess.normalize, self.flip)
        result.embeddings = result.embeddings.astype(np.float32, copy=False)
        return result

    def embed_paths(self, inputs: Sequence[str | Path]) -> tuple[Embeddings, list[str]]:
        """Embed image files and folders (see :func:`~centrum.inference.collect_images`); returns the
        embeddings and the class names their labels index (an image outside a class folder: label -1)."""
        samples, names = collect_images(inputs)
        return self.embed_samples(samples), names

    def embed_splits(self, splits: DatasetSplits) -> tuple[Embeddings, Embeddings]:
        """Embed a dataset's query split, then its gallery split unless it is the same set."""
        return embed_query_gallery(self.embed_samples, splits)

    def __repr__(self) -> str:
        return f"TorchEmbedder(name={self.name!r}, device={str(self.device)!r}, flip={self.flip})"
