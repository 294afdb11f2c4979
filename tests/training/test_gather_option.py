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
