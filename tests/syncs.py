"""Count the operations of a piece of code that make the host wait on the device (test helper).

:class:`SyncCounter` is a ``TorchDispatchMode``: every ATen call passes through it, and the calls whose result
the host must read before it can go on (a tensor's value turned into a Python number, or an output whose shape
depends on the data) are counted by name. On a CPU they cost nothing, but on a GPU each one drains the launch
queue, so a training step that makes none can run ahead of the device.
"""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

#: ATen operations that synchronise with the device: a value read by the host, or a data-dependent shape
SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",  # .item(), float(t), bool(t), int(t)
        "nonzero",
        "nonzero_static",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "masked_select",
        "is_nonzero",
        "equal",
        "repeat_interleave",  # with a tensor of repeats, its output size is data-dependent
    }
)


class SyncCounter(TorchDispatchMode):
    """Counts the calls of :data:`SYNC_OPS` made while active (``counts``: name -> calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        # repeat_interleave syncs only with a tensor of repeats (overloads "Tensor", "self_Tensor"), not an int
        static = name == "repeat_interleave" and "Tensor" not in func._overloadname
        if name in SYNC_OPS and not static:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """All counted calls."""
        return sum(self.counts.values())
