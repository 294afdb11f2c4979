"""``objective.gather_across_ranks`` and ``trainer.num_nodes``: the config fields round-trip through YAML and
are range-checked, the option wraps exactly the batch-mining terms (CTL: triplet and centroid triplet; metric:
the loss incl. Symm) in GatherAcrossRanks, and in one process it changes nothing: the same loss terms, the same
gradients, the same trained weights and metrics as the run without it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from centrum.losses.distributed import GatherAcrossRanks
from centrum.training import config_from_dict, train
from centrum.training.config import load_config
from centrum.training.module import build_objective


def with_option(config, on: bool, **trainer):
    return dataclasses.replace(
        config,
        objective=dataclasses.replace(config.objective, gather_across_ranks=on),
        trainer=dataclasses.replace(config.trainer, **trainer),
    )


@pytest.mark.parametrize("kind", ["ctl", "symm"])
def test_config_round_trip_and_defaults(tiny_config, tmp_path: Path, kind) -> None:
    config = tiny_config(kind)
    assert config.objective.gather_across_ranks is False and config.trainer.num_nodes == 1  # off by default
    changed = with_option(config, True, num_nodes=4)
    path = tmp_path / "c.yaml"
    path.write_text(changed.to_yaml())
    again = load_config(path)
    assert again == changed
    assert again.objective.gather_across_ranks is True and again.trainer.num_nodes == 4


@pytest.mark.parametrize(
    ("section", "field", "value", "needle"),
    [
        ("trainer", "num_nodes", 0, "trainer.num_nodes must be >= 1"),
        ("objective", "gather_across_ranks", "yes", "gather_across_ranks"),
    ],
)
def test_bad_values_name_the_field(tiny_config, section, field, value, needle) -> None:
    data = tiny_config("ctl").to_dict()
    data[section][field] = value
    with pytest.raises(ValueError, match=needle):
        config_from_dict(data)


def outputs_and_labels(feat_dim: int, num_classes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(4)
    raw = torch.randn(len(labels), feat_dim, generator=gen, requires_grad=True)
    logits = torch.randn(len(labels), num_classes, generator=gen, requires_grad=True)
    return {"raw": raw, "bn": raw, "logits": logits}, labels


@pytest.mark.parametrize("kind", ["ctl", "symm"])
def test_one_process_objective_with_the_option_equals_the_plain_one(tiny_config, kind) -> None:
    config = tiny_config(kind)
    results = []
    for on in (False, True):
        torch.manual_seed(0)  # the same center-loss centers
        objective = build_objective(dataclasses.replace(config.objective, gather_across_ranks=on), 6, 16)
        wrapped = [n for n, m in objective.named_modules() if isinstance(m, GatherAcrossRanks)]
        assert wrapped == ([] if not on else (["triplet", "centroid_triplet"] if kind == "ctl" else ["loss"]))
        outputs, labels = outputs_and_labels(16, 6)
        terms = objective(outputs, labels)
        terms["loss"].backward()
        results.append((terms, outputs["raw"].grad.clone()))
    (plain, plain_grad), (gathered, gathered_grad) = results
    assert plain.keys() == gathered.keys()  # the same terms and statistics are logged
    for name in plain:
        torch.testing.assert_close(gathered[name], plain[name], rtol=0, atol=0, msg=name)
    assert plain_grad.abs().sum() > 0
    torch.testing.assert_close(gathered_grad, plain_grad, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ctl", "symm"])
def test_one_process_training_with_the_option_equals_the_run_without(tiny_config, stripes_splits, tmp_path, kind):
    runs = []
    for on in (False, True):
        config = with_option(tiny_config(kind), on, max_epochs=1, limit_train_batches=3)
        runs.append(train(config, tmp_path / f"run-{on}", splits=stripes_splits, enable_progress_bar=False))
    plain, gathered = runs
    state_a, state_b = plain.model.state_dict(), gathered.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_b[key], state_a[key], rtol=0, atol=1e-6, msg=key)
    assert gathered.metrics == plain.metrics


# A script, because torch.multiprocessing's spawn re-imports the main module in each child.
TWO_RANKS = r"""
import json, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from centrum.training.config import CTLObjectiveConfig, MetricObjectiveConfig
from centrum.training.module import build_objective

SPLIT = 12  # rank 0 holds classes 0-2, rank 1 classes 3-5 (the P x M sampler gives ranks disjoint classes)


def worker(rank, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/init", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(4)
    raw, logits = torch.randn(24, 16, generator=g), torch.randn(24, 6, generator=g)
    part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, 24)
    out = {}
    configs = {"ctl": CTLObjectiveConfig(gather_across_ranks=True),
               "symm": MetricObjectiveConfig(loss="triplet", symm=True, gather_across_ranks=True)}
    for kind, config in configs.items():
        torch.manual_seed(0)
        objective = build_objective(config, 6, 16)
        local = raw[part].clone().requires_grad_(True)
        terms = objective({"raw": local, "bn": local, "logits": logits[part]}, labels[part])
        terms["loss"].backward()
        out[kind] = {"terms": {k: float(v) for k, v in terms.items()}, "grad": local.grad.tolist()}
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
"""


def test_two_gloo_ranks_compute_the_batch_terms_of_the_whole_batch(tmp_path: Path) -> None:
    """On two CPU processes the gathered terms (CTL: triplet, centroid triplet; metric: triplet + Symm) equal
    the one-process objective on the concatenated batch, and each rank's embedding gradient is the world size
    times its rows of the one-process gradient (DDP's averaging then gives the one-process parameter gradient)."""
    import json
    import os
    import subprocess
    import sys

    from centrum.training.config import CTLObjectiveConfig, MetricObjectiveConfig

    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=300, env=env)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(4)
    raw, logits = torch.randn(24, 16, generator=g), torch.randn(24, 6, generator=g)
    configs = {"ctl": CTLObjectiveConfig(), "symm": MetricObjectiveConfig(loss="triplet", symm=True)}
    for kind, config in configs.items():
        torch.manual_seed(0)
        objective = build_objective(config, 6, 16)
        whole = raw.clone().requires_grad_(True)
        terms = objective({"raw": whole, "bn": whole, "logits": logits}, labels)
        gathered = ["triplet", "centroid_triplet"] if kind == "ctl" else ["loss"]
        for rank in ranks:
            for name in gathered:
                assert rank[kind]["terms"][name] == pytest.approx(float(terms[name].detach()), abs=1e-6), (kind, name)
        if kind == "symm":  # the whole objective is gathered: gradients compare directly
            terms["loss"].backward()
            local_grads = torch.tensor(ranks[0][kind]["grad"] + ranks[1][kind]["grad"])
            torch.testing.assert_close(local_grads / 2, whole.grad, rtol=1e-5, atol=1e-6)
