"""Study files: grid expansion, named axes, several grids, the quick variant, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from centrum.study import load_study, plan_runs, study_from_dict

BASE = {
    "name": "b",
    "data": {"dataset": "fashion-mnist", "image_size": [32, 32], "num_workers": 0},
    "model": {"backbone": "small_cnn", "embedding_dim": 16, "bnneck": False},
    "objective": {"kind": "metric", "loss": "triplet"},
    "trainer": {"max_epochs": 3, "accelerator": "cpu"},
}


def study(**fields):
    return {"name": "s", "base": BASE, "metric": "dml/map@r", "grid": {"objective.symm": [False, True]}, **fields}


def test_grid_is_the_cartesian_product_with_named_axes() -> None:
    s = study_from_dict(
        study(
            grid={
                "loss": {
                    "triplet": {"objective.loss": "triplet", "objective.loss_options": {"margin": 0.2}},
                    "npair": {"objective.loss": "npair", "objective.loss_options": {}},
                },
                "objective.symm": [False, True],
            },
            seeds=[0, 1, 2],
        )
    )
    cells = s.cells()
    assert [c.label for c in cells] == [
        "loss=triplet, symm=false",
        "loss=triplet, symm=true",
        "loss=npair, symm=false",
        "loss=npair, symm=true",
    ]
    config = s.config(cells[1], seed=2)
    assert config.seed == 2 and config.objective.symm is True and config.objective.loss_options == {"margin": 0.2}
    assert s.config(cells[2], 0).objective.loss == "npair"
    assert len({c.key for c in cells}) == 4
    assert len(plan_runs(s, "out")) == 12


def test_cells_with_equal_configs_share_runs() -> None:
    # alpha x beta, then top-k: alpha=2, beta=1, top_k=1 is the same config in both grids
    s = study_from_dict(
        {
            "name": "s",
            "base": BASE,
            "metric": "dml/map@r",
            "overrides": {"objective.symm": True, "objective.symm_options": {"alpha": 2.0, "beta": 1.0, "top_k": 1}},
            "grids": [
                {"objective.symm_options.alpha": [1.5, 2.0], "objective.symm_options.beta": [1.0]},
                {"objective.symm_options.top_k": [1, 2]},
            ],
        }
    )
    cells = s.cells()
    assert len(cells) == 4
    shared = {c.label: c.key for c in cells}
    assert shared["alpha=2.0, beta=1.0"] == shared["top_k=1"]
    assert shared["alpha=1.5, beta=1.0"] != shared["alpha=2.0, beta=1.0"]
    assert s.config(cells[0], 0).objective.symm_options == {"alpha": 1.5, "beta": 1.0, "top_k": 1}
    assert len(plan_runs(s, "out")) == 3  # one seed, four cells, three distinct configs


def test_quick_variant_overrides_seeds_and_schedule(tmp_path: Path) -> None:
    base_file = tmp_path / "configs" / "base.yaml"
    base_file.parent.mkdir()
    base_file.write_text(yaml.safe_dump(BASE))
    data = study(
        base="configs/base.yaml", seeds=[0, 1, 2], quick={"seeds": [0], "overrides": {"trainer.max_epochs": 1}}
    )
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    full, quick = load_study(path), load_study(path, quick=True)
    assert full.seeds == [0, 1, 2] and full.config(full.cells()[0], 0).trainer.max_epochs == 3
    assert quick.seeds == [0] and quick.config(quick.cells()[0], 0).trainer.max_epochs == 1
    assert quick.name == "s-quick"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seed": [0]}, "unknown study field(s) ['seed']"),
        ({"metric": "map"}, "metric must name protocol/metric"),
        ({"seeds": [0, 0]}, "seeds must be distinct"),
        ({"grid": {"objective.symm": []}}, "grid.objective.symm must be a non-empty list"),
        ({"compare": [{"vary": "symm_on", "base": False, "treatment": True}]}, "is not a grid axis"),
        ({"grid": {"objective.lossy": ["triplet"]}}, "unknown field objective.lossy; did you mean 'loss'?"),
        ({"analyses": ["tsne", "pie"]}, "analyses must be a list drawn from"),
    ],
)
def test_bad_study_fields_are_named(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        study_from_dict(study(**fields))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"study file .*nope\.yaml does not exist"):
        load_study(tmp_path / "nope.yaml")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study(base="missing.yaml")))
    with pytest.raises(FileNotFoundError, match=r"base config .*missing\.yaml does not exist"):
        load_study(path)


def test_set_overrides_every_cell_and_changes_its_folder() -> None:
    plain = study_from_dict(study())
    moved = study_from_dict(study(), extra_overrides=["trainer.max_epochs=7", "data.image_size=[64, 64]"])
    for cell in moved.cells():
        config = moved.config(cell, 0)
        assert config.trainer.max_epochs == 7 and config.data.image_size == (64, 64)
    assert {c.key for c in plain.cells()}.isdisjoint(c.key for c in moved.cells())
    with pytest.raises(ValueError, match=r"must look like section\.field=value"):
        study_from_dict(study(), extra_overrides=["trainer.max_epochs"])


STUDIES = sorted((Path(__file__).parents[2] / "studies").rglob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_load_with_their_claims(path: Path) -> None:
    """Every shipped study (and its quick variant) validates every cell's config and compares real axes."""
    raw = yaml.safe_load(path.read_text())
    for quick in (False, True) if "quick" in raw else (False,):
        s = load_study(path, quick=quick)
        assert len(s.seeds) >= (2 if quick else 3)  # a verdict needs at least two paired seeds
        assert s.comparisons and s.cells()
        judged = [{c.setting(comp.vary) for c in s.cells()} >= {comp.base, comp.treatment} for comp in s.comparisons]
        # the full study judges every claim; a quick grid may be smaller, but judges something
        assert any(judged) if quick else all(judged)


def test_the_three_cpu_studies_are_shipped() -> None:
    assert {p.name for p in STUDIES} >= {"symm_losses.yaml", "symm_ablation.yaml", "ctl.yaml"}
