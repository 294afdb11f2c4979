"""A full disk during training: one line that names the run folder and says the disk is full, exit code 2,
and no temporary checkpoint left behind (nor written anywhere outside the run folder)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from centrum.cli import main


@pytest.fixture(params=["512k", "2m"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 512 KiB (room for a run's config and logs, not for one checkpoint of the tiny model, ~1.1 MB)
    or of 2 MiB (room for one checkpoint, not for it and the temporary file of the next one)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_names_the_run_folder_and_leaves_no_temporary_file(
    small_disk: Path, stripes_csv: Path, tiny_config, tmp_path: Path, capsys
) -> None:
    config = tiny_config("ctl", max_epochs=1, checkpoint_every_n_steps=1)
    config.data.root = str(stripes_csv)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(config.to_yaml())
    run_dir = small_disk / "run"
    code = main(["train", str(config_file), "--out", str(run_dir), "--progress", "none"])
    captured = capsys.readouterr()
    assert code == 2, captured.err[-2000:]
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("centrum train: error:")]
    assert len(errors) == 1, captured.err
    assert str(run_dir) in errors[0] and "full" in errors[0], errors[0]
    assert "/tmp/tmp" not in errors[0]  # Lightning's writer staged checkpoints in the system's temp folder
    leftovers = [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert (run_dir / "config.yaml").is_file()  # the run's record up to the failure stays
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():  # the 2 MiB disk: the checkpoint before the failed write is whole and says so
        assert f"its last checkpoint {last} is intact" in errors[0]
        assert torch.load(last, weights_only=False)["global_step"] >= 1
    else:
        assert "no checkpoint was written yet" in errors[0]
