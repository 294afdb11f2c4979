"""What the study tells a user before and after training, without training: clear one-line errors (an empty
file, a cell whose data.root is missing, the help text), the 'identical arms' and 'collapsed' verdicts, the seeds
that would decide an open claim, a sequential study's looks, and the report page's layout in headless Chromium."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from centrum.cli import main
from centrum.study import collect, plan_runs, study_from_dict, write_report
from centrum.study.sequential import DESIGN_FILE, plan_design, read_design, run_sequential
from centrum.study.spec import extended_seeds, load_study
from centrum.study.stats import COLLAPSED, IDENTICAL, INCONCLUSIVE, REPRODUCED, seeds_needed

CHROMIUM = "/usr/bin/chromium"
BASE = {
    "data": {"dataset": "fashion-mnist", "image_size": [32, 32], "num_workers": 0},
    "model": {"backbone": "small_cnn", "embedding_dim": 16, "bnneck": False},
    "objective": {"kind": "metric", "loss": "triplet"},
    "trainer": {"max_epochs": 1, "accelerator": "cpu"},
}


def two_arm_study(seeds: list[int], **compare) -> dict:
    return {
        "name": "symm",
        "base": BASE,
        "grid": {
            "loss": {"contrastive": {"objective.loss": "contrastive"}, "triplet": {}},
            "objective.symm": [False, True],
        },
        "seeds": seeds,
        "metric": "dml/Recall@1",
        "compare": [{"vary": "objective.symm", "base": False, "treatment": True, "claim": "Symm helps", **compare}],
        "analyses": ["curves"],
    }


def write_run(run, value: float, digest: str, spread: float, evaluated_epochs: int = 1) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "results.json").write_text(json.dumps({"seed": run.seed, "metrics": {"dml": {"Recall@1": value}}}))
    rows = ["epoch,step,train/loss_step,eval/dml/Recall@1"]
    rows += [f"{e},{e},{1.0 / (e + 1)},{value if e >= 0 else ''}" for e in range(evaluated_epochs)]
    (run.run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    state = {"weights_sha256": digest, "max_pairwise_cosine_distance": spread, "images": 64}
    (run.run_dir / "final_state.json").write_text(json.dumps(state))


def test_an_empty_study_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match=r"^study file .*empty\.yaml is empty"):
        load_study(empty)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"study file .*list\.yaml must be a mapping .*got a list"):
        load_study(listed)
    assert main(["study", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_a_missing_data_root_names_the_cell_and_where_omniglot_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = {
        **two_arm_study([0, 1]),
        "grid": {
            "dataset": {"fmnist": {}, "omniglot": {"data.dataset": "omniglot", "data.root": str(tmp_path / "nope")}},
            "objective.symm": [False, True],
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cell 'dataset=omniglot, symm=false'" in err and f"data.root {tmp_path / 'nope'} does not exist" in err
    assert "github.com/brendenlake/omniglot" in err and err.endswith("that cell's data.root in " + str(path))
    assert not out.exists()  # checked before anything is created
    # a root that comes from the base config (not the cell) is pointed at with --set
    data["grid"] = {"objective.symm": [False, True]}
    data["base"] = {**BASE, "data": {**BASE["data"], "dataset": "omniglot", "root": "no/such/omniglot"}}
    path.write_text(yaml.safe_dump(data))
    assert main(["study", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cell 'symm=false': data.root no/such/omniglot does not exist (relative to" in err
    assert "then point at it with --set data.root=PATH" in err
    data["base"] = {**BASE, "data": {**BASE["data"], "dataset": "omniglot"}}  # no root at all
    path.write_text(yaml.safe_dump(data))
    assert main(["study", str(path), "--out", str(out)]) == 2
    assert "cell 'symm=false': data.root is not set for dataset 'omniglot'" in capsys.readouterr().err
    real = tmp_path / "omniglot"
    real.mkdir()
    assert load_study(path, extra_overrides=[f"data.root={real}"]).check_data() is None


def test_help_prints_plain_percent(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    text = capsys.readouterr().out
    assert "95 % intervals" in text and "%%" not in text and "--sequential" in text and "--seeds" in text


def test_more_seeds_keep_the_files_and_add_new_ones() -> None:
    assert extended_seeds([0, 1, 2], 5) == [0, 1, 2, 3, 4]
    assert extended_seeds([5, 0, 2], 5) == [5, 0, 2, 6, 7]
    assert extended_seeds([0, 1, 2], 2) == [0, 1]
    study = study_from_dict(two_arm_study([0, 1, 2])).with_seeds(4)
    assert study.seeds == [0, 1, 2, 3]


def test_identical_and_collapsed_arms_get_their_own_verdict(tmp_path: Path) -> None:
    study = study_from_dict(two_arm_study([0, 1, 2]))
    for run in plan_runs(study, tmp_path):
        loss, symm = run.cell.setting("loss"), run.cell.setting("symm")
        if loss == "contrastive":  # Symm changes nothing: same weights, same metric at every seed
            write_run(run, 0.4 + 0.01 * run.seed, f"w{run.seed}", 0.5)
        else:  # triplet collapses with Symm on every seed; the metric noise alone would be inconclusive
            noise = 0.02 * (-1) ** run.seed if symm == "true" else 0.0
            write_run(run, 0.3 + noise, f"{symm}{run.seed}", 5e-4 if symm == "true" else 0.4)
    judged = {ctx: r for _, ctx, r in collect(study, tmp_path).comparisons}
    assert judged["loss=contrastive"].verdict == IDENTICAL
    assert "bit-identical weights at all 3 seeds" in judged["loss=contrastive"].note
    assert judged["loss=triplet"].verdict == COLLAPSED and "treatment arm" in judged["loss=triplet"].note
    md = write_report(study, tmp_path)[0].read_text()
    assert "| identical arms |" in md and "| collapsed |" in md and "| inconclusive |" not in md


def test_identical_arms_are_found_in_runs_without_a_final_state(tmp_path: Path) -> None:
    """Runs written before final_state.json existed: the same loss at every step and the same metrics."""
    study = study_from_dict(two_arm_study([0, 1]))
    for run in plan_runs(study, tmp_path):
        write_run(run, 0.4 + 0.01 * run.seed, "", 0.5)
        (run.run_dir / "final_state.json").unlink()
    judged = {ctx: r.verdict for _, ctx, r in collect(study, tmp_path).comparisons}
    assert judged == {"loss=contrastive": IDENTICAL, "loss=triplet": IDENTICAL}
    symm = next(r for r in plan_runs(study, tmp_path) if r.cell.setting("symm") == "true")
    (symm.run_dir / "metrics.csv").write_text("epoch,step,train/loss_step,eval/dml/Recall@1\n0,0,0.9,0.4\n")
    judged = {ctx: r.verdict for _, ctx, r in collect(study, tmp_path).comparisons}
    assert judged[f"loss={symm.cell.setting('loss')}"] == INCONCLUSIVE  # one step's loss differs: not identical


def test_an_open_claim_says_how_many_seeds_would_decide_it(tmp_path: Path) -> None:
    study = study_from_dict(two_arm_study([0, 1, 2], gain_to_detect=0.01))
    gains = {0: 0.03, 1: -0.01, 2: 0.01}
    for run in plan_runs(study, tmp_path):
        value = 0.4 + (gains[run.seed] if run.cell.setting("symm") == "true" else 0.0)
        write_run(run, value, f"{run.cell.key}{run.seed}", 0.4)
    ((_, _, r), _) = collect(study, tmp_path).comparisons
    assert r.verdict == INCONCLUSIVE and r.detect_gain == 0.01
    # differences 0.03, -0.01, 0.01: sd 0.02; a gain of 0.01 at that spread needs 34 seeds
    assert r.seeds_needed == seeds_needed(0.01, 0.02) == 34
    assert "~34 seeds to detect +0.0100 (power 0.8)" in write_report(study, tmp_path)[0].read_text()


def test_a_sequential_study_adds_seeds_only_to_open_claims(tmp_path: Path) -> None:
    """The runner's look-by-look plan, with a stand-in for training that writes each run's result at once."""
    study = study_from_dict(two_arm_study([0, 1, 2]))
    trained: list[tuple[str, int]] = []

    def fake_train(study_, run, threads=None):
        # contrastive: Symm wins by 0.1 every seed (decided at once); triplet: noise only (stays open)
        gain = 0.1 if run.cell.setting("loss") == "contrastive" else 0.02 * (-1) ** run.seed
        value = 0.4 + (gain if run.cell.setting("symm") == "true" else 0.0) + 0.001 * run.seed
        write_run(run, value, f"{run.cell.key}{run.seed}", 0.4)
        trained.append((run.cell.key, run.seed))
        return 0.0

    import centrum.study.runner as runner

    original, runner.execute_run = runner.execute_run, fake_train
    try:
        design = run_sequential(study, tmp_path, 8, looks=[3, 5, 8], log=lambda line: None)
    finally:
        runner.execute_run = original
    assert read_design(tmp_path)[0] == design and json.loads((tmp_path / DESIGN_FILE).read_text())["seeds"] == [
        0, 1, 2, 3, 4, 5, 6, 7
    ]  # fmt: skip
    keys = {
        c.setting("loss"): {k for k, _ in trained if k.startswith(f"loss-{c.setting('loss')}")} for c in study.cells()
    }
    contrastive_seeds = {s for k, s in trained if k in keys["contrastive"]}
    triplet_seeds = {s for k, s in trained if k in keys["triplet"]}
    assert triplet_seeds == set(range(8)) and len(trained) == 2 * 3 + 2 * 8
    judged = {ctx: r for _, ctx, r in collect(study, tmp_path).comparisons}
    # contrastive was decided at a look and never trained further than it needed
    assert judged["loss=contrastive"].verdict == REPRODUCED
    assert contrastive_seeds == set(range(len(judged["loss=contrastive"].seeds)))
    assert judged["loss=triplet"].verdict == INCONCLUSIVE and judged["loss=triplet"].design == "look 3/3"
    # the design is fixed once written: other looks in the same folder are refused
    with pytest.raises(ValueError, match="fixed before the data"):
        run_sequential(study, tmp_path, 12, log=lambda line: None)
    assert plan_design(study, 8, [3, 5, 8])[1] == list(range(8))
    md = write_report(study, tmp_path)[0].read_text()
    assert "Sequential study: claims were looked at after 3, 5, 8 paired seeds" in md


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"headless Chromium not installed at {CHROMIUM}")
def test_report_fits_a_phone(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    study = study_from_dict(two_arm_study([0, 1, 2]))
    for run in plan_runs(study, tmp_path):
        write_run(run, 0.4 + 0.01 * run.seed, f"{run.cell.key}{run.seed}", 0.4)
    _, page_path = write_report(study, tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 800})
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            boxes = page.eval_on_selector_all("div.scroll", "els => els.map(e => [e.scrollWidth, e.clientWidth])")
            images = page.eval_on_selector_all("img", "els => els.map(e => e.getBoundingClientRect().width)")
        finally:
            browser.close()
    assert widths[0] <= widths[1]  # the page itself never scrolls sideways
    assert any(sw > cw for sw, cw in boxes)  # the wide table scrolls inside its own box
    assert images and all(w <= 390 for w in images)
