"""Experiment configs: YAML round trip, overrides, typo suggestions, type errors; the LR schedule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from centrum.training import (
    CTLObjectiveConfig,
    ExperimentConfig,
    MetricObjectiveConfig,
    config_from_dict,
    load_config,
    warmup_multistep_factor,
)


def test_yaml_round_trip_gives_an_equal_config(tmp_path: Path) -> None:
    config = config_from_dict(
        {
            "name": "x",
            "data": {"p": 8, "image_size": [64, 32], "options": {"max_per_class": 3}},
            "objective": {"kind": "metric", "loss": "npair", "symm": True, "symm_options": {"top_k": 2}},
            "optimizer": {"milestones": [5, 9]},
        }
    )
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert again.data.image_size == (64, 32)
    assert isinstance(again.objective, MetricObjectiveConfig) and again.objective.symm_options == {"top_k": 2}


def test_overrides_reach_any_field_and_are_parsed_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ExperimentConfig().to_yaml())
    config = load_config(
        path,
        [
            "trainer.max_epochs=3",
            "data.image_size=[32, 32]",
            "objective.centroid_weight=0",
            "data.options.max_per_class=7",
        ],
    )
    assert config.trainer.max_epochs == 3
    assert config.data.image_size == (32, 32)
    assert isinstance(config.objective, CTLObjectiveConfig) and config.objective.centroid_weight == 0.0
    assert config.data.options == {"max_per_class": 7}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"data": {"num_worker": 3}}, "unknown field data.num_worker; did you mean 'num_workers'?"),
        ({"trainer": {"max_epoch": 3}}, "did you mean 'max_epochs'?"),
        ({"modle": {}}, "unknown config section 'modle'; did you mean 'model'?"),
        ({"objective": {"kind": "ctl", "centroid_wieght": 1}}, "did you mean 'centroid_weight'?"),
        ({"trainer": {"max_epochs": "ten"}}, "trainer.max_epochs must be an integer, got 'ten'"),
        ({"data": {"recipe": "fancy"}}, "data.recipe must be one of 'reid', 'dml', got 'fancy'"),
        ({"objective": {"kind": "magic"}}, "objective.kind must be one of ctl, metric"),
        ({"model": {"bnneck": "yes"}}, "model.bnneck must be true or false"),
    ],
)
def test_bad_fields_get_a_message_that_names_them(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config_from_dict(data)


def test_bad_override_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ExperimentConfig().to_yaml())
    with pytest.raises(ValueError, match=re.escape("must look like section.field=value")):
        load_config(path, ["trainer.max_epochs"])
    with pytest.raises(ValueError, match=r"c.yaml: unknown field trainer.epochs; did you mean 'max_epochs'\?"):
        load_config(path, ["trainer.epochs=2"])
    with pytest.raises(FileNotFoundError, match=re.escape("nope.yaml does not exist")):
        load_config(tmp_path / "nope.yaml")


def test_warmup_then_step_decay_by_hand() -> None:
    # strong-baseline schedule: 0.01 -> 1 linearly over 10 epochs, x0.1 from epoch 40, x0.01 from 70
    assert warmup_multistep_factor(0) == pytest.approx(0.01)
    assert warmup_multistep_factor(5) == pytest.approx(0.01 * 0.5 + 0.5)
    assert warmup_multistep_factor(9) == pytest.approx(0.01 * 0.1 + 0.9)
    assert warmup_multistep_factor(10) == 1.0
    assert warmup_multistep_factor(39) == 1.0
    assert warmup_multistep_factor(40) == pytest.approx(0.1)
    assert warmup_multistep_factor(69) == pytest.approx(0.1)
    assert warmup_multistep_factor(70) == pytest.approx(0.01)
    assert warmup_multistep_factor(3, warmup_epochs=0, milestones=()) == 1.0


def test_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string; configs read it as the number it is."""
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  lr: 1e-3\n  weight_decay: 5E-4\nobjective:\n  center_weight: 5e-4\n")
    config = load_config(path, ["optimizer.center_lr=2e-1"])
    assert config.optimizer.lr == 0.001 and config.optimizer.weight_decay == 0.0005
    assert config.optimizer.center_lr == 0.2 and config.objective.center_weight == 0.0005
    assert load_config(path, ["name=1e3x"]).name == "1e3x"  # not every digit-led word is a number


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trainer": {"max_epochs": -1}}, "trainer.max_epochs must be >= 1, got -1"),
        ({"trainer": {"max_epochs": 0}}, "trainer.max_epochs must be >= 1, got 0"),
        ({"trainer": {"eval_every": -2}}, "trainer.eval_every must be >= 0"),
        ({"optimizer": {"lr": 0}}, "optimizer.lr must be a number > 0, got 0.0"),
        ({"optimizer": {"lr": -0.1}}, "optimizer.lr must be a number > 0"),
        ({"optimizer": {"gamma": 0}}, "optimizer.gamma must be in (0, 1]"),
        ({"optimizer": {"gamma": 10}}, "optimizer.gamma must be in (0, 1]"),
        ({"optimizer": {"warmup_factor": 0}}, "optimizer.warmup_factor must be in (0, 1]"),
        ({"objective": {"kind": "ctl", "triplet_margin": -0.3}}, "objective.triplet_margin must be >= 0"),
        ({"objective": {"kind": "ctl", "centroid_margin": -1}}, "objective.centroid_margin must be >= 0"),
        ({"objective": {"kind": "ctl", "label_smoothing": 1.0}}, "objective.label_smoothing must be in [0, 1)"),
        (
            {"objective": {"kind": "metric", "loss_options": {"margin": -0.2}}},
            "objective.loss_options.margin must be a number >= 0",
        ),
        ({"data": {"p": 0}}, "data.p must be >= 1"),
    ],
)
def test_out_of_range_values_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config_from_dict(data)
