"""Losses across ranks: two CPU processes (gloo) give the loss and gradients of one process on the whole batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from centrum.losses import build_loss
from centrum.losses.distributed import GatherAcrossRanks, gather_across_ranks

# A script, because torch.multiprocessing's spawn re-imports the main module in each child.
SCRIPT = r"""
import json, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from centrum.losses import build_loss
from centrum.losses.distributed import GatherAcrossRanks

SPLIT = 10  # rank 0 holds the first 10 samples, rank 1 the other 6: uneven on purpose


def batch():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1, 4, 4, 5, 5, 2, 3])
    return torch.randn(16, 8, generator=g), labels


def worker(rank, init_file, out_dir, cases):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    x, labels = batch()
    part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, 16)
    torch.manual_seed(1)
    layer = torch.nn.Linear(8, 8)  # same initial weights on both ranks
    out = {}
    for case, spec in cases.items():
        spec = dict(spec)
        loss = GatherAcrossRanks(build_loss(spec.pop("name"), **spec), scale_for_ddp=False)
        local = x[part].clone().requires_grad_(True)
        value = loss(local, labels[part])
        value.backward()
        scaled = GatherAcrossRanks(loss.loss, scale_for_ddp=True)
        layer.zero_grad()
        scaled(layer(x[part]), labels[part]).backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        for g in grads:  # what DistributedDataParallel does: average parameter gradients over ranks
            dist.all_reduce(g)
            g /= 2
        out[case] = {"loss": float(value), "grad": local.grad.tolist(), "param_grads": [g.tolist() for g in grads]}
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])), nprocs=2)
"""

CASES = {
    "triplet": dict(name="triplet", mining="hard"),
    "contrastive": dict(name="contrastive"),
    "lifted": dict(name="lifted"),
    "npair": dict(name="npair"),
    "angular": dict(name="angular"),
    "triplet+symm": dict(name="triplet", symm=True),
    "lifted+symm-pair": dict(name="lifted", symm=True, symm_options={"candidates": "pair"}),
    "centroid_triplet": dict(name="centroid_triplet"),
}


def test_single_process_is_the_plain_loss() -> None:
    x = torch.randn(8, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    gathered, gathered_labels, mine = gather_across_ranks(x, labels)
    assert gathered is x and gathered_labels is labels and mine == slice(0, 8)
    base = build_loss("triplet")
    assert torch.equal(GatherAcrossRanks(base)(x, labels), base(x, labels))


def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "init"), str(tmp_path), json.dumps(CASES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1, 4, 4, 5, 5, 2, 3])
    x = torch.randn(16, 8, generator=g)
    torch.manual_seed(1)
    layer = torch.nn.Linear(8, 8)
    for case, spec in CASES.items():
        spec = dict(spec)
        loss = build_loss(spec.pop("name"), **spec)
        whole = x.clone().requires_grad_(True)
        value = loss(whole, labels)
        value.backward()
        layer.zero_grad()
        loss(layer(x), labels).backward()
        for rank, rows in ((0, slice(0, 10)), (1, slice(10, 16))):
            got = ranks[rank][case]
            assert got["loss"] == pytest.approx(float(value.detach()), abs=1e-6), case
            torch.testing.assert_close(torch.tensor(got["grad"]), whole.grad[rows], atol=1e-6, rtol=1e-5)
            for mine, reference in zip(got["param_grads"], layer.parameters(), strict=True):
                torch.testing.assert_close(torch.tensor(mine), reference.grad, atol=1e-6, rtol=1e-5)
