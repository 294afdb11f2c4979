"""The report on hand-made run folders (no training): an alpha x beta + top-k ablation whose results.json files
are written by the test, so every verdict, table cell and picture is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from centrum.study import collect, plan_runs, study_from_dict, write_report

BASE = {
    "data": {"dataset": "fashion-mnist", "image_size": [32, 32], "num_workers": 0},
    "model": {"backbone": "small_cnn", "embedding_dim": 16, "bnneck": False},
    "objective": {"kind": "metric", "loss": "triplet", "symm": True},
    "trainer": {"max_epochs": 1, "accelerator": "cpu"},
}


def recall(alpha: float, beta: float, top_k: int, seed: int) -> float:
    """Made-up results: best at alpha 2, beta 1, top-k 1; seed noise 0.001 * seed, the same in every cell."""
    return 0.6 - 0.1 * abs(alpha - 2.0) - 0.04 * abs(beta - 1.0) - 0.02 * (top_k - 1) + 0.001 * seed


@pytest.fixture
def ablation(tmp_path: Path):
    study = study_from_dict(
        {
            "name": "ablation",
            "base": BASE,
            "overrides": {"objective.symm_options": {"alpha": 2.0, "beta": 1.0, "top_k": 1}},
            "grids": [
                {"objective.symm_options.alpha": [1.5, 2.0, 2.5], "objective.symm_options.beta": [0.5, 1.0]},
                {"objective.symm_options.top_k": [1, 2, 4]},
            ],
            "seeds": [0, 1, 2],
            "metric": "dml/Recall@1",
            "compare": [
                {"vary": "objective.symm_options.alpha", "base": 1.5, "treatment": 2.0, "claim": "alpha 2 > 1.5"},
                {"vary": "objective.symm_options.top_k", "base": 1, "treatment": 4, "claim": "top-4 > top-1"},
            ],
            "analyses": ["heatmap", "topk", "curves"],
        }
    )
    for run in plan_runs(study, tmp_path):
        opts = study.config(run.cell, run.seed).objective.symm_options
        value = recall(opts["alpha"], opts["beta"], opts["top_k"], run.seed)
        run.run_dir.mkdir(parents=True)
        metrics = {"dml": {"Recall@1": value, "num_queries": 100}}
        (run.run_dir / "results.json").write_text(json.dumps({"seed": run.seed, "metrics": metrics}))
        (run.run_dir / "metrics.csv").write_text(
            f"epoch,step,train/loss_step,eval/dml/Recall@1\n0,0,1.0,\n0,1,0.5,{value}\n"
        )
    return study, tmp_path


def test_verdicts_and_tables_from_hand_made_results(ablation) -> None:
    study, out = ablation
    assert len(plan_runs(study, out)) == 8 * 3  # 6 + 3 cells, alpha 2 / beta 1 / top-k 1 shared: 8 configs
    results = collect(study, out)
    judged = {(c.claim, ctx): r for c, ctx, r in results.comparisons}
    # alpha 2 beats 1.5 by exactly 0.05 on every seed: zero spread, a degenerate interval above 0
    r = judged[("alpha 2 > 1.5", "beta=0.5")]
    assert r.mean == pytest.approx(0.05) and r.low == pytest.approx(0.05) and r.verdict == "reproduced"
    assert judged[("alpha 2 > 1.5", "beta=1.0")].verdict == "reproduced"
    # top-4 loses 0.06 on every seed: the claimed gain is ruled out
    r = judged[("top-4 > top-1", "all")]
    assert r.mean == pytest.approx(-0.06) and r.verdict == "not reproduced"
    assert len(results.comparisons) == 3


def test_report_draws_heatmap_and_topk_and_leaves_out_counts(ablation) -> None:
    study, out = ablation
    md_path, html_path = write_report(study, out)
    md = md_path.read_text()
    for name in ("study_alpha_beta", "study_topk", "study_curves"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in md
    # mean ± std of a hand-made cell: alpha 1.5, beta 0.5, top-k 1 over seeds 0, 1, 2
    values = [recall(1.5, 0.5, 1, s) for s in (0, 1, 2)]
    assert f"| alpha=1.5, beta=0.5 | 3 | {sum(values) / 3:.4f} ± 0.0010 |" in md
    assert "num_queries" not in md  # counts are not quality metrics
    assert html_path.read_text().count("data:image/png;base64,") == 3
