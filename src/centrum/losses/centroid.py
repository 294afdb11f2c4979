"""The losses of the CTL model: Centroid Triplet Loss, center loss and label-smoothed cross-entropy."""

from __future__ import annotations

import torch
from torch import nn

from centrum.distances import check_metric
from centrum.losses import functional as LF
from centrum.validation import as_tensor, check_embeddings_labels, check_labels

__all__ = ["CenterLoss", "CentroidTripletLoss", "CrossEntropyLabelSmooth"]


class CentroidTripletLoss(nn.Module):
    """Centroid Triplet Loss (Wieczorek et al. 2021): a triplet loss between each sample and class centroids.

    ``variant="paper"`` (default): positive = leave-one-out centroid of the sample's class, negative = the
    nearest full centroid of another class, averaged over samples of classes with >= 2 samples.
    ``variant="official"``: the authors' code, batch-hard mining over queries and leave-one-out centroids,
    one rotation per sample position (see :func:`centrum.losses.functional.centroid_triplet_loss`).
    Defaults: margin 0.5, plain Euclidean distance on un-normalised features, as in the authors' code.
    """

    def __init__(
        self, margin: float = 0.5, variant: str = "paper", distance: str = "euclidean", normalize: bool = False
    ) -> None:
        super().__init__()
        if variant not in ("paper", "official"):
            raise ValueError(f"unknown variant {variant!r}; choose 'paper' or 'official'")
        self.margin, self.variant = float(margin), variant
        self.distance, self.normalize = check_metric(distance), bool(normalize)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of a batch of N embeddings (N x D) with N integer labels; a scalar tensor."""
        return LF.centroid_triplet_loss(embeddings, labels, self.margin, self.variant, self.distance, self.normalize)


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016) with learnable class centers ``centers`` (C x D, initialised N(0, 1)).

    ``forward(features, labels) = mean_i ||x_i - c_{y_i}||^2``: squared Euclidean distance summed over the D
    dimensions, averaged over the batch, no factor 1/2 (the strong-baseline convention; weight it 5e-4 and
    step the centers with their own SGD, lr 0.5, their gradient divided by that weight, as the CTL recipe does).
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        if int(num_classes) < 1 or int(feat_dim) < 1:
            raise ValueError(f"num_classes and feat_dim must be positive, got {num_classes} and {feat_dim}")
        self.num_classes, self.feat_dim = int(num_classes), int(feat_dim)
        self.centers = nn.Parameter(torch.randn(self.num_classes, self.feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean squared distance of each feature to the center of its class."""
        x, lab = check_embeddings_labels(features, labels, name="features")
        if x.shape[1] != self.feat_dim:
            raise ValueError(f"features have {x.shape[1]} dimensions but the centers have feat_dim={self.feat_dim}")
        if bool(((lab < 0) | (lab >= self.num_classes)).any()):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got values {int(lab.min())}..{int(lab.max())}"
            )
        return LF.center_loss(x, lab, self.centers)


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing: targets ``(1 - epsilon) * onehot + epsilon / num_classes``
    (Szegedy et al. 2016), averaged over the batch; ``epsilon=0.1`` as in the strong baseline."""

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        self.num_classes, self.epsilon = int(num_classes), float(epsilon)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy of N x num_classes logits against N integer labels."""
        z = as_tensor(logits, "logits")
        if z.ndim != 2 or z.shape[1] != self.num_classes:
            raise ValueError(f"logits must be N x {self.num_classes}, got shape {tuple(z.shape)}")
        if z.shape[0] == 0:
            raise ValueError("logits is empty (0 rows)")
        if not torch.is_floating_point(z) or not bool(torch.isfinite(z).all()):
            raise ValueError("logits must be finite floating-point values")
        lab = check_labels(labels, z.shape[0], of="logits").to(z.device)
        if bool(((lab < 0) | (lab >= self.num_classes)).any()):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got values {int(lab.min())}..{int(lab.max())}"
            )
        return LF.label_smoothed_cross_entropy(z, lab, self.epsilon)
