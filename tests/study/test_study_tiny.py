"""A tiny study end to end: 2 cells (triplet, triplet + Symm) x 2 seeds x 1 epoch on the stripes data.

Checks that every run trains once (and only once, resumably), that the report's verdicts follow from the runs'
own results.json, and that report.html opens in a real headless Chromium with every embedded image decoded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import yaml

from centrum.cli import main
from centrum.study import collect, paired_comparison, plan_runs, run_study, study_from_dict, write_report

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, stripes_csv_study: Path, study_data):
    """The tiny study trained once for the module: ``(study, out folder, progress lines)``."""
    study = study_from_dict(study_data(stripes_csv_study))
    out = tmp_path_factory.mktemp("tiny-study")
    lines: list[str] = []
    run_study(study, out, log=lines.append)
    write_report(study, out)
    return study, out, lines


def test_every_cell_and_seed_trains_with_progress(tiny_study) -> None:
    study, out, lines = tiny_study
    plan = plan_runs(study, out)
    assert len(plan) == 4 and all(r.finished for r in plan)
    assert {json.loads((r.run_dir / "results.json").read_text())["seed"] for r in plan} == {0, 1}
    assert lines[0].startswith("study tiny: 2 cells x 2 seeds = 4 runs; 0 already finished")
    assert lines[-1].startswith("[4/4 runs, 2/2 cells]") and "left" in lines[-1]
    # same seed, same data: the two arms differ only by Symm (their configs differ in objective.symm alone)
    a, b = (study.config(c, 0).to_dict() for c in study.cells())
    assert a["objective"].pop("symm") is False and b["objective"].pop("symm") is True
    a.pop("name"), b.pop("name")
    assert a == b


def test_finished_runs_are_skipped_and_interrupted_ones_resume(tiny_study, tmp_path: Path) -> None:
    study, out, _ = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    plan = plan_runs(study, copy)
    stamps = {r.run_dir: (r.run_dir / "results.json").stat().st_mtime_ns for r in plan}
    interrupted = plan[1]
    (interrupted.run_dir / "results.json").unlink()  # as if killed after its last checkpoint
    assert interrupted.interrupted
    lines: list[str] = []
    run_study(study, copy, log=lines.append)
    assert "3 already finished, 1 to resume, 1 to run" in lines[0]
    assert len(lines) == 2 and f"seed {interrupted.seed} finished" in lines[1]
    for run in plan:
        if run is not interrupted:
            assert (run.run_dir / "results.json").stat().st_mtime_ns == stamps[run.run_dir]
    assert interrupted.finished


def test_verdicts_follow_from_the_runs_results(tiny_study) -> None:
    study, out, _ = tiny_study
    results = collect(study, out)
    base, symm = study.cells()
    per_seed = {
        cell.key: {
            json.loads((r.run_dir / "results.json").read_text())["seed"]: json.loads(
                (r.run_dir / "results.json").read_text()
            )["metrics"]["products"]["mAP"]
            for r in plan_runs(study, out)
            if r.cell == cell
        }
        for cell in (base, symm)
    }
    expected = paired_comparison(per_seed[base.key], per_seed[symm.key])
    ((_, context, judged),) = results.comparisons
    assert context == "all" and judged.seeds == (0, 1)
    assert judged.mean == pytest.approx(expected.mean) and judged.verdict == expected.verdict
    d = [per_seed[symm.key][s] - per_seed[base.key][s] for s in (0, 1)]
    half = 12.7062 * abs(d[0] - d[1]) / math.sqrt(2) / math.sqrt(2)  # t_{0.975,1} * s / sqrt(n)
    assert judged.low == pytest.approx(sum(d) / 2 - half, abs=1e-4)
    report = (out / "report.md").read_text()
    assert f"[{judged.low:+.4f}, {judged.high:+.4f}]" in report and f"| {judged.verdict} |" in report
    assert "| symm=false | 2 |" in report and "| symm=true | 2 |" in report


def test_report_pictures_exist_and_are_captioned(tiny_study) -> None:
    _, out, _ = tiny_study
    report = (out / "report.md").read_text()
    for name in ("study_curves", "study_synthetic_share", "study_tsne", "study_centroids", "study_step_cost"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in report
    assert report.count("ranked_lists.png") == 2
    assert "heatmap, topk" in report  # said plainly that this grid has no alpha/beta/top-k axes
    html = (out / "report.html").read_text()
    assert "src='figures" not in html and html.count("data:image/png;base64,") == 7


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"headless Chromium not installed at {CHROMIUM}")
def test_report_html_opens_in_chromium_with_every_image_loaded(tiny_study) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    _, out, _ = tiny_study
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, ok: e.complete}))"
            )
            verdict_cells = page.eval_on_selector_all("td.ok, td.bad, td.unsure", "els => els.length")
        finally:
            browser.close()
    assert len(images) == 7
    assert all(i["ok"] and i["w"] > 0 and i["h"] > 0 for i in images), images
    assert verdict_cells == 1
    assert all(u.startswith(("file:", "data:")) for u in requests)  # self-contained: nothing fetched


def test_cli_reports_and_rejects_bad_studies(
    tiny_study, study_data, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    study, out, _ = tiny_study
    path = tmp_path / "tiny.yaml"
    # analyses do not change any run's config: the CLI redraws the curves from the module's finished runs
    path.write_text(yaml.safe_dump({**study_data(Path(study.base["data"]["root"])), "analyses": ["curves"]}))
    assert main(["study", str(path), "--out", str(out), "--report-only"]) == 0
    assert "report.html" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**study_data(Path("x")), "seeds": "0"}))
    assert main(["study", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("centrum study: error:") and "seeds must be a non-empty list of integers" in err
    assert main(["study", str(path), "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "no finished run" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_jobs_give_the_same_runs(tiny_study, tmp_path: Path) -> None:
    """--jobs 2 trains each run in its own process with the same thread count as --jobs 1: bit-identical weights
    and metrics (before the thread count was fixed they differed by up to 1.3e-4 per run)."""
    study, out, _ = tiny_study
    lines: list[str] = []
    run_study(study, tmp_path, jobs=2, log=lines.append)
    assert "4 to run with 2 job(s)" in lines[0] and lines[-1].startswith("[4/4 runs, 2/2 cells]")
    for serial, parallel in zip(plan_runs(study, out), plan_runs(study, tmp_path), strict=True):
        a = json.loads((serial.run_dir / "results.json").read_text())["metrics"]
        b = json.loads((parallel.run_dir / "results.json").read_text())["metrics"]
        assert a == b
        states = [json.loads((r.run_dir / "final_state.json").read_text()) for r in (serial, parallel)]
        assert states[0]["weights_sha256"] == states[1]["weights_sha256"] and states[0]["torch_threads"] == 1
