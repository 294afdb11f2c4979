"""A run's record is never rewritten by a resume that cannot be honest, the epoch line of a resumed epoch
reports that epoch's time, and bad data settings stop before a run folder exists."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from centrum.training import train
from interrupts import RunInterruptedError, StopAtStep


def fingerprint(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file of a run folder, by relative path."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def test_finished_run_resumed_with_fewer_epochs_is_refused(tiny_config, stripes_splits, tmp_path: Path) -> None:
    """A finished 2-epoch run resumed with trainer.max_epochs=1 is refused with the epochs named, and every file
    of the run is unchanged (config.yaml and the checkpoints said 1 epoch afterwards)."""
    finished = tmp_path / "finished"
    train(tiny_config("ctl", max_epochs=2), finished, splits=stripes_splits, enable_progress_bar=False)
    before = fingerprint(finished)
    with pytest.raises(ValueError, match=r"with trainer\.max_epochs=1: the run has trained 2 epoch\(s\)") as info:
        train(tiny_config("ctl", max_epochs=1), finished, resume=True, splits=stripes_splits, enable_progress_bar=False)
    assert "\n" not in str(info.value)
    assert fingerprint(finished) == before


def test_interrupted_run_resumed_with_fewer_epochs_is_refused(tiny_config, stripes_splits, tmp_path: Path) -> None:
    """Interrupted in epoch 2: resuming with max_epochs=1 is refused and changes nothing; with max_epochs=2
    (the epochs reached) the run finishes epoch 2 and ends."""
    # 4 batches an epoch: step 6 is in epoch 2, part of which is already in the weights
    interrupted = tmp_path / "interrupted"
    config = tiny_config("ctl", max_epochs=3, checkpoint_every_n_steps=1)
    with pytest.raises(RunInterruptedError):
        train(config, interrupted, splits=stripes_splits, enable_progress_bar=False, callbacks=[StopAtStep(6)])
    before = fingerprint(interrupted)
    with pytest.raises(ValueError, match=r"has trained 1 epoch\(s\) and \d batch\(es\) of epoch 2"):
        train(tiny_config("ctl", max_epochs=1), interrupted, resume=True, splits=stripes_splits, progress="none")
    assert fingerprint(interrupted) == before
    # as many epochs as reached is allowed: the interrupted epoch is finished and the run ends there
    result = train(
        tiny_config("ctl", max_epochs=2, checkpoint_every_n_steps=1),
        interrupted,
        resume=True,
        splits=stripes_splits,
        progress="none",
    )
    assert result.history[-1][0] == 2


EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) .* (\d+\.\d) s(?: \(resumed: (\d+\.\d) s before the interruption\))?$")


def test_epoch_line_of_a_resumed_epoch_reports_its_own_time(
    tiny_config, stripes_splits, tmp_path: Path, capsys
) -> None:
    """Interrupted mid-epoch 2 and resumed in plain progress mode: the line of epoch 2 says it was resumed and
    reports at most the wall time of both parts together (it reported the time since the machine booted)."""
    import time

    config = tiny_config("ctl", max_epochs=2, checkpoint_every_n_steps=1)
    start = time.monotonic()
    with pytest.raises(RunInterruptedError):
        train(config, tmp_path / "run", splits=stripes_splits, progress="plain", callbacks=[StopAtStep(6)])
    train(config, tmp_path / "run", resume=True, splits=stripes_splits, progress="plain")
    elapsed = time.monotonic() - start
    lines = [m for line in capsys.readouterr().out.splitlines() if (m := EPOCH_LINE.match(line))]
    assert [(m[1], m[4] is not None) for m in lines] == [("1", False), ("2", True)], lines
    total, before = float(lines[1][3]), float(lines[1][4])
    assert 0 <= before <= total <= elapsed + 0.1, (before, total, elapsed)
