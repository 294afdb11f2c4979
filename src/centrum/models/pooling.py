"""Global pooling of a feature map into one vector per image: average and generalised-mean (GeM)."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS: tuple[str, ...] = ("avg", "gem")


def _check_feature_map(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a feature map of shape B x C x h x w, got shape {tuple(x.shape)}")


class GlobalAveragePooling(nn.Module):
    """Mean over the spatial positions: B x C x h x w -> B x C."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x.mean((2, 3))``."""
        _check_feature_map(x)
        return x.mean(dim=(2, 3))


class GeneralizedMeanPooling(nn.Module):
    """Generalised-mean (GeM) pooling, Radenović et al. 2018: ``f_c = (mean_{h,w} x_{c,h,w}^p)^(1/p)``.

    ``p = 1`` is average pooling and ``p -> inf`` tends to max pooling; p = 3 is the usual choice for
    retrieval. Activations are clamped at ``eps`` first so that fractional powers stay real (the input
    is a post-ReLU map, so this changes only exact zeros).

    Args:
        p: the exponent, > 0.
        learnable: make ``p`` a trained parameter (shared by all channels).
        eps: lower clamp of the activations.
    """

    def __init__(self, p: float = 3.0, learnable: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"GeM exponent p must be > 0, got {p!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = eps
        self.learnable = learnable
        p_tensor = torch.tensor(float(p))
        if learnable:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool a B x C x h x w map to B x C."""
        _check_feature_map(x)
        # Powers of half-precision activations overflow quickly: compute in float32.
        p = self.p.float()
        pooled = x.float().clamp_min(self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
        return pooled.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4g}, learnable={self.learnable}, eps={self.eps}"


def build_pooling(name: str) -> nn.Module:
    """Return the pooling module called ``name``: ``"avg"`` or ``"gem"`` (p = 3, fixed)."""
    if name == "avg":
        return GlobalAveragePooling()
    if name == "gem":
        return GeneralizedMeanPooling()
    raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
