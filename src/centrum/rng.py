"""Global random streams kept out of the way of analyses: :func:`preserved_rng`."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["preserved_rng"]


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body and then put every global random stream back where it was: Python's ``random``, NumPy's
    legacy global generator, torch's CPU generator and every CUDA device's. Iterating a ``DataLoader`` alone
    draws its base seed from torch's CPU stream, so an evaluation or snapshot during training would otherwise
    shift every later augmentation, dropout mask and batch of the run."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
