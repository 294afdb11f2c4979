"""Any timm model as a backbone (optional: timm needs torchvision, which the core never imports)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

TIMM_PREFIX = "timm:"
TIMM_EXTRA_HINT = "install the extra with: pip install 'centrum[timm]' (timm also installs torchvision)"


def _import_timm():
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"'timm:<model_name>' backbones need the timm package, which failed to import ({exc}); {TIMM_EXTRA_HINT}"
        ) from exc
    return timm


class TimmBackbone(nn.Module):
    """Wrap ``timm.create_model(model_name)`` so that ``forward`` returns its last feature map.

    The classifier and timm's own pooling are removed (``num_classes=0, global_pool=""``) and
    ``forward_features`` is called, so pooling, embedding and BNNeck are centrum's. ``last_stride`` is
    not applied: timm models expose no common handle on their last stride (pass ``output_stride`` in
    ``timm_options`` for the models that support it).
    """

    def __init__(self, model_name: str, *, pretrained: bool = False, **timm_options: Any) -> None:
        super().__init__()
        timm = _import_timm()
        try:
            self.model = timm.create_model(
                model_name, pretrained=pretrained, num_classes=0, global_pool="", **timm_options
            )
        except RuntimeError as exc:
            raise ValueError(f"timm could not create model {model_name!r}: {exc}") from exc
        self.model_name = model_name
        self.out_channels: int = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the timm model's ``forward_features`` output (B x C x h x w for convolutional models)."""
        return self.model.forward_features(x)
