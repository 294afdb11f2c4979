"""A training run interrupted in-process at a chosen step (test helper): :class:`StopAtStep` raises
:class:`RunInterruptedError` there, standing for a crash (tests/training/test_resume.py also kills a subprocess
for real)."""

from __future__ import annotations

import lightning as L


class RunInterruptedError(Exception):
    """Stands for a crash in-process."""


class StopAtStep(L.Callback):
    """Raises :class:`RunInterruptedError` once the trainer reaches global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RunInterruptedError(f"stopped at step {self.step}")
