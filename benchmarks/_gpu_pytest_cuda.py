"""A pytest plugin of ``benchmarks/gpu.py``: keeps only the tests that need CUDA (``-p _gpu_pytest_cuda``).

A test needs CUDA when a ``skipif`` marker of it (its own, its class's or its module's) gives a reason that
names CUDA or a GPU, or when its name says ``cuda`` or ``gpu``: how this project's tests that skip without
a GPU are written. Importing this module runs nothing.
"""

from __future__ import annotations

import re

_CUDA = re.compile(r"cuda|gpu", re.IGNORECASE)


def needs_cuda(name: str, skip_reasons: list[str]) -> bool:
    """True for a test called ``name`` whose ``skipif`` reasons are ``skip_reasons`` that exercises CUDA."""
    return bool(_CUDA.search(name)) or any(_CUDA.search(reason) for reason in skip_reasons)


def pytest_collection_modifyitems(config, items) -> None:
    """Deselect every collected test that does not need CUDA."""
    keep, drop = [], []
    for item in items:
        reasons = [str(marker.kwargs.get("reason", "")) for marker in item.iter_markers("skipif")]
        (keep if needs_cuda(item.name, reasons) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
