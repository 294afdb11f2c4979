"""The learning-rate schedule of the CTL recipe: linear warm-up, then step decay at milestones."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def warmup_multistep_factor(
    epoch: int,
    warmup_epochs: int = 10,
    warmup_factor: float = 0.01,
    milestones: Sequence[int] = (40, 70),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at ``epoch`` (0-based).

    During the first ``warmup_epochs`` epochs it rises linearly from ``warmup_factor`` to 1 (the strong
    baseline's warm-up); afterwards it is ``gamma ** (number of milestones <= epoch)``, so with the
    default it is x0.1 from epoch 40 and x0.01 from epoch 70.
    """
    decay = gamma ** bisect.bisect_right(sorted(milestones), epoch)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        return (warmup_factor * (1.0 - alpha) + alpha) * decay
    return decay
