"""The classification-side losses of the CTL model: center loss and label-smoothed cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from centrum.losses._masks import _zero_loss
from centrum.losses.base import ReportsStats
from centrum.validation import as_tensor, check_embeddings_labels, check_labels, value_checks_enabled

__all__ = ["CenterLoss", "CrossEntropyLabelSmooth", "center_loss", "label_smoothed_cross_entropy"]


def center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Center loss (Wen et al. 2016) in the strong-baseline normalisation:
    ``mean_i ||x_i - c_{y_i}||^2`` (squared Euclidean, summed over dimensions, averaged over the batch;
    no factor 1/2)."""
    x = features.float()
    return ((x - centers.float()[labels]) ** 2).sum(1).mean()


def label_smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against smoothed targets ``(1 - epsilon) * onehot + epsilon / K`` (Szegedy et al.
    2016), averaged over the batch; ``K`` is the number of logit columns."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    K = logits.shape[1]
    nll = -log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean() if K > 0 else _zero_loss(logits)


class CenterLoss(ReportsStats, nn.Module):
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
        """Mean squared distance of each feature to the center of its class (label range: a value check)."""
        x, lab = check_embeddings_labels(features, labels, name="features")
        if x.shape[1] != self.feat_dim:
            raise ValueError(f"features have {x.shape[1]} dimensions but the centers have feat_dim={self.feat_dim}")
        if value_checks_enabled() and bool(((lab < 0) | (lab >= self.num_classes)).any()):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got values {int(lab.min())}..{int(lab.max())}"
            )
        return center_loss(x, lab, self.centers)


class CrossEntropyLabelSmooth(ReportsStats, nn.Module):
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
        if not torch.is_floating_point(z):
            raise ValueError(f"logits must be floating point, got {z.dtype}")
        if value_checks_enabled() and not bool(torch.isfinite(z).all()):
            raise ValueError("logits must be finite floating-point values")
        lab = check_labels(labels, z.shape[0], of="logits").to(z.device)
        if value_checks_enabled() and bool(((lab < 0) | (lab >= self.num_classes)).any()):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got values {int(lab.min())}..{int(lab.max())}"
            )
        return label_smoothed_cross_entropy(z, lab, self.epsilon)
