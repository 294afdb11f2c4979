"""Distributed data-parallel training on the CPU (gloo): two processes, each with its own classes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Lightning's "ddp" launcher starts rank 1 by re-running this script, so it must be a file.
SCRIPT = """
import sys
import lightning as L
from centrum.training import load_config, train

class RecordClasses(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(f"{sys.argv[2]}/classes-rank{trainer.global_rank}.txt", "a") as f:
            f.write(" ".join(str(int(c)) for c in batch[1].unique()) + "\\n")

if __name__ == "__main__":
    train(load_config(sys.argv[1]), sys.argv[2], enable_progress_bar=False, callbacks=[RecordClasses()])
"""


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(stripes_csv: Path, tiny_config, tmp_path: Path) -> None:
    config = tiny_config("ctl", max_epochs=2, devices=2, strategy="ddp")
    config.data.root = str(stripes_csv)
    config.data.p = 3  # 6 training classes: 3 per process
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config.to_yaml())
    script = tmp_path / "run_ddp.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(config_path), str(run_dir)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    batches = {rank: (run_dir / f"classes-rank{rank}.txt").read_text().split("\n")[:-1] for rank in (0, 1)}
    assert len(batches[0]) == len(batches[1]) > 0  # equal number of steps on both ranks: no hang
    for epoch_step in range(len(batches[0])):
        mine, theirs = set(batches[0][epoch_step].split()), set(batches[1][epoch_step].split())
        assert len(mine) == len(theirs) == 3 and not mine & theirs  # disjoint classes in each step
    results = json.loads((run_dir / "results.json").read_text())  # written once, by rank 0
    assert results["metrics"]["products"]["num_valid_queries"] > 0
    final = torch.load(run_dir / "model.ckpt", weights_only=False)
    assert final["epoch"] == 2
