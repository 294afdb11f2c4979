"""Resume is exact and honest: a run interrupted anywhere and resumed ends with the weights, metrics and
metrics rows of the run that was never interrupted; one checkpoint writer; a resume that cannot be honest
(no run, another config, an unsafe checkpoint) stops with a message that says why."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from centrum.training import callbacks as callbacks_module
from centrum.training import run as run_module
from centrum.training import train
from interrupts import RunInterruptedError, StopAtStep


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def assert_same_run(a, b) -> None:
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_b[key], state_a[key], rtol=0, atol=1e-6, msg=key)
    assert b.metrics == a.metrics
    assert b.history == a.history
    assert rows(b.run_dir) == rows(a.run_dir)  # every logged value, epoch means included, each step once


class FailingEvaluation:
    """``evaluate_model`` that raises on its ``fail_at``-th call (a crash during an evaluation)."""

    def __init__(self, fail_at: int) -> None:
        self.real, self.fail_at, self.calls = callbacks_module.evaluate_model, fail_at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RunInterruptedError("evaluation failed")
        return self.real(*args, **kwargs)


def test_interrupted_runs_resume_exactly(tiny_config, stripes_splits, tmp_path: Path, monkeypatch) -> None:
    """Three epochs of 4 batches, evaluated after each, checkpointed every step. RunInterruptedError twice mid-epoch,
    or during the final evaluation, then resumed: the same weights, metrics and metrics rows as the run
    that was never interrupted; the final evaluation that failed is run again."""
    config = tiny_config("ctl", max_epochs=3, eval_every=1, checkpoint_every_n_steps=1)
    expected = train(config, tmp_path / "reference", splits=stripes_splits, enable_progress_bar=False)

    run_dir = tmp_path / "twice"
    with pytest.raises(RunInterruptedError):  # mid-epoch 2
        train(config, run_dir, splits=stripes_splits, enable_progress_bar=False, callbacks=[StopAtStep(6)])
    with pytest.raises(RunInterruptedError):  # again, in the resumed part, at epoch 3's second batch
        train(
            config, run_dir, resume=True, splits=stripes_splits, enable_progress_bar=False, callbacks=[StopAtStep(10)]
        )
    assert (run_dir / run_module.METRICS_ASIDE).is_file()
    resumed = train(config, run_dir, resume=True, splits=stripes_splits, enable_progress_bar=False)
    assert_same_run(expected, resumed)
    assert not (run_dir / run_module.METRICS_ASIDE).exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]  # one writer, no last-v1
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 12 and last["epoch"] == 2  # the newest state: after the last epoch

    run_dir = tmp_path / "evaluation"
    monkeypatch.setattr(callbacks_module, "evaluate_model", FailingEvaluation(fail_at=3))  # the final one
    with pytest.raises(RunInterruptedError):
        train(config, run_dir, splits=stripes_splits, enable_progress_bar=False)
    monkeypatch.undo()
    resumed = train(config, run_dir, resume=True, splits=stripes_splits, enable_progress_bar=False)
    assert resumed.metrics and resumed.metrics == expected.metrics
    assert_same_run(expected, resumed)


def test_resume_without_a_run_says_so(tiny_config, stripes_splits, tmp_path: Path) -> None:
    config = tiny_config("ctl", max_epochs=1)
    with pytest.raises(ValueError, match=r"there is no run to resume in .*instead of resuming"):
        train(config, tmp_path / "nothing", resume=True, splits=stripes_splits, enable_progress_bar=False)
    assert not (tmp_path / "nothing" / "config.yaml").exists()


def test_resume_with_another_config_names_the_fields(tiny_config, stripes_splits, tmp_path: Path) -> None:
    config = tiny_config("ctl", max_epochs=1)
    train(config, tmp_path / "run", splits=stripes_splits, enable_progress_bar=False)
    other = tiny_config("ctl", max_epochs=2)
    other.optimizer.lr = 1e-2
    other.data.p = 5
    with pytest.raises(ValueError, match=r"differs from the run's config.yaml in data\.p, optimizer\.lr \(only"):
        train(other, tmp_path / "run", resume=True, splits=stripes_splits, enable_progress_bar=False)


def test_resume_refuses_a_checkpoint_that_would_run_code(tiny_config, stripes_splits, tmp_path: Path) -> None:
    config = tiny_config("ctl", max_epochs=1)
    run_dir = tmp_path / "run"
    train(config, run_dir, splits=stripes_splits, enable_progress_bar=False)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    checkpoint["extra"] = Payload()
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"last\.ckpt was refused: it holds Python objects that could run code"):
        train(config, run_dir, resume=True, splits=stripes_splits, enable_progress_bar=False)
    assert not marker.exists()


def test_zero_training_steps_is_an_error(stripes_csv: Path, tiny_config, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(stripes_csv.parent, root)
    for image in (root / "train").glob("*.png"):
        image.write_bytes(b"not a png")
    config = tiny_config("ctl", max_epochs=1)
    config.data.root = str(root / stripes_csv.name)
    config.data.on_error = "skip"
    with pytest.raises(ValueError, match=r"training made zero steps: all 96 training images .* skipped"):
        train(config, tmp_path / "run", enable_progress_bar=False)
    assert not (tmp_path / "run" / "results.json").exists()


KILLED_RUN = """
import os, signal, sys
import lightning as L
import torch
from centrum.training import callbacks as callbacks_module
from centrum.training import load_config, train

where, at = sys.argv[3], int(sys.argv[4])
torch.set_num_threads(int(sys.argv[6]))  # the reference run's count: float sums depend on it

class KillAt(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if where == "step" and trainer.global_step == at:
            os.kill(os.getpid(), signal.SIGKILL)

real = callbacks_module.evaluate_model
calls = []
def evaluate(*args, **kwargs):
    calls.append(1)
    if where == "evaluation" and len(calls) == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
callbacks_module.evaluate_model = evaluate
train(load_config(sys.argv[1]), sys.argv[2], resume=sys.argv[5] == "resume", enable_progress_bar=False,
      callbacks=[KillAt()])
"""


@pytest.mark.slow
def test_sigkilled_at_several_points_resumes_exactly(stripes_csv: Path, tiny_config, tmp_path: Path) -> None:
    """SIGKILL mid-epoch, at an epoch boundary and during an evaluation, in turn, in one run; then resume."""
    config = tiny_config("ctl", max_epochs=3, eval_every=1, checkpoint_every_n_steps=1)
    config.data.root = str(stripes_csv)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config.to_yaml())
    expected = train(config, tmp_path / "reference", enable_progress_bar=False)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    threads = str(torch.get_num_threads())
    kills = [("step", 2, "fresh"), ("step", 4, "resume"), ("evaluation", 2, "resume")]
    for where, at, how in kills:
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_RUN, str(config_path), str(run_dir), where, str(at), how, threads],
            capture_output=True,
            text=True,
            env=env,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = train(config, run_dir, resume=True, enable_progress_bar=False)
    assert_same_run(expected, resumed)
