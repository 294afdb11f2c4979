"""Watching for embedding collapse: the spread of a fixed sample's embeddings, logged and checked every epoch.

A metric-learning loss can reach a degenerate minimum where every image maps to (nearly) the same point: with
batch-hard triplet mining on the unit sphere, pulling everything together makes every triplet's loss exactly the
margin, and from scratch at a high learning rate the model can settle there. The loss then looks flat, not
broken, and retrieval is decided by noise in the last decimals. :class:`EmbeddingSpreadMonitor` measures, once per
training epoch, the mean pairwise cosine distance of a fixed sample of images' inference embeddings
(:func:`embedding_spread`: 0 when all point the same way, about 1 for unrelated directions), logs it as
``train/embedding_spread`` and warns when it falls below a threshold.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from centrum.data import ImageDataset, SampleList

#: the metric name under which the spread is logged
SPREAD_METRIC = "train/embedding_spread"


class EmbeddingCollapseWarning(UserWarning):
    """The embeddings of different images have (nearly) collapsed to one point."""


def embedding_spread(embeddings: torch.Tensor) -> float:
    """The mean cosine distance ``1 - cos(e_i, e_j)`` over all pairs ``i != j`` of the rows of ``embeddings``.

    0 when every row points the same way (a collapsed embedding), 1 for orthogonal rows, up to 2 for opposite
    ones. Rows of (near) zero length have no direction: when every row is one, the spread is 0. Needs at least
    two rows; NaN when an embedding is not finite.
    """
    x = embeddings.detach().to(torch.float64).flatten(1)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"the spread needs at least 2 embeddings, got {n}")
    if not bool(torch.isfinite(x).all()):
        return float("nan")
    norms = x.norm(dim=1)
    if float(norms.max()) <= 1e-12:
        return 0.0
    unit = torch.where((norms > 1e-12).unsqueeze(1), x / norms.clamp_min(1e-12).unsqueeze(1), 0.0)
    # sum over i != j of cos = |sum of unit rows|^2 - sum of |unit row|^2: O(n d), no n x n matrix
    total = unit.sum(dim=0)
    off_diagonal = float(total @ total) - float((unit * unit).sum())
    return 1.0 - off_diagonal / (n * (n - 1))


def _embedding(output: Any) -> torch.Tensor:
    """The embedding in a module's output: the tensor itself, or an EmbeddingModel dict's inference feature."""
    if isinstance(output, dict):
        return output["bn"] if "bn" in output else output["raw"]
    return output


class EmbeddingSpreadMonitor(Callback):
    """Once per training epoch, embeds a fixed sample of images, logs their spread and warns on collapse.

    Args:
        samples: the images to embed; by default the training split of the trainer's data module
            (``trainer.datamodule.splits.train``, a :class:`~centrum.training.datamodule.RetrievalDataModule`).
        transform: the transform that turns an image into the model's input; by default the data module's
            test-time transform (no random augmentation, so the measurement is the same every epoch).
        num_images: how many images of ``samples`` to embed (fewer when ``samples`` has fewer), chosen once
            with a generator seeded by ``seed``, never with the global random state.
        threshold: warn (:class:`EmbeddingCollapseWarning`) when the spread falls below it; the demo's
            collapsed triplet models measured 2e-4, the healthy ones 0.3-0.5.
        batch_size: images per forward pass.

    The module is called as ``pl_module(images)`` in eval mode without gradients (for
    :class:`~centrum.training.module.RetrievalModule`, the inference feature). Training is unchanged: the
    modules' train/eval modes are restored exactly, no random number is drawn from any global generator, and no
    optimiser or BatchNorm statistic moves. :attr:`history` keeps ``(epoch, spread)`` of every measurement.
    """

    def __init__(
        self,
        samples: SampleList | None = None,
        transform: Callable[[Any], torch.Tensor] | None = None,
        *,
        num_images: int = 128,
        threshold: float = 1e-3,
        seed: int = 0,
        batch_size: int = 128,
    ) -> None:
        if num_images < 2:
            raise ValueError(f"num_images must be at least 2 (the spread is over pairs), got {num_images}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.samples = samples
        self.transform = transform
        self.num_images = int(num_images)
        self.threshold = float(threshold)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.history: list[tuple[int, float]] = []
        self._images: torch.Tensor | None = None
        self._collapsed = False

    def _load_images(self, trainer: L.Trainer) -> torch.Tensor:
        samples, transform = self.samples, self.transform
        datamodule = getattr(trainer, "datamodule", None)
        if samples is None:
            if datamodule is None or not hasattr(datamodule, "splits"):
                raise ValueError("EmbeddingSpreadMonitor needs samples=... when the trainer has no RetrievalDataModule")
            samples = datamodule.splits.train
        if transform is None:
            if datamodule is None or not hasattr(datamodule, "test_transform"):
                raise ValueError(
                    "EmbeddingSpreadMonitor needs transform=... when the trainer has no RetrievalDataModule"
                )
            transform = datamodule.test_transform()
        count = min(self.num_images, len(samples))
        picks = np.sort(np.random.default_rng(self.seed).choice(len(samples), size=count, replace=False))
        dataset = ImageDataset(samples.subset([int(i) for i in picks]), transform, on_error="skip")
        items = [item for item in (dataset[i] for i in range(len(dataset))) if item is not None]
        if len(items) < 2:  # nothing to measure (e.g. every image unreadable and skipped): training says so
            return torch.empty(0)
        return torch.stack([item[0] for item in items])

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """The spread of the sample's embeddings under the module's current weights (changes nothing)."""
        if self._images is None:
            self._images = self._load_images(trainer)
        modes = [(m, m.training) for m in pl_module.modules()]
        python_state, numpy_state = random.getstate(), np.random.get_state()
        device = pl_module.device
        devices = [device.index or 0] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                pl_module.eval()
                parts = [
                    _embedding(pl_module(self._images[i : i + self.batch_size].to(device))).float().cpu()
                    for i in range(0, len(self._images), self.batch_size)
                ]
        finally:
            for module, training in modes:
                module.training = training
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        return embedding_spread(torch.cat(parts))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Measure, log ``train/embedding_spread``, warn when it is below the threshold (once per collapse)."""
        epoch = trainer.current_epoch + 1
        if self._images is None:
            self._images = self._load_images(trainer)
        if len(self._images) < 2:
            return
        spread = self.measure(trainer, pl_module)
        self.history = [h for h in self.history if h[0] != epoch] + [(epoch, spread)]
        pl_module.log(SPREAD_METRIC, spread, on_step=False, on_epoch=True)
        collapsed = not spread >= self.threshold  # NaN counts as collapsed
        if collapsed and not self._collapsed and trainer.is_global_zero:
            what = "are not finite (NaN or inf)" if math.isnan(spread) else f"have collapsed (spread {spread:.2g})"
            count = 0 if self._images is None else len(self._images)
            warnings.warn(
                f"epoch {epoch}: the embeddings {what}: the mean pairwise cosine distance of "
                f"{count} sampled images is below {self.threshold:g}, so every image maps to "
                "nearly the same point and retrieval ranks by noise; try semi-hard mining "
                "(objective.loss_options.mining=semihard), a lower optimizer.lr, or a recipe with a "
                "classification term (objective.kind=ctl)",
                EmbeddingCollapseWarning,
                stacklevel=2,
            )
        self._collapsed = collapsed
