"""``benchmarks/gpu.py``, the GPU check in one go: its quick CPU run end to end (so that it cannot rot), and its
parts that decide figures: the CUDA-test selection, the fp16 step's GradScaler, the Market-layout generator,
the TensorBoard log reader and the in-epoch rate, the pytest report counts, the time budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
SECTIONS = ["cuda_tests", "losses", "training_steps", "evaluation", "train_cli", "serve"]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    """The benchmarks folder importable (its modules import each other by file name), undone afterwards."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:  # benchmarks' `training`, `evaluation`... must not outlive the test
        if Path(getattr(sys.modules[name], "__file__", None) or "/").parent == BENCHMARKS:
            del sys.modules[name]


@pytest.mark.slow
def test_quick_cpu_run_writes_every_section(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done in" in proc.stdout and "losses: ok" in proc.stdout  # progress lines as it goes
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert list(report["sections"]) == SECTIONS
    assert report["quick"] is True and report["environment"]["device"] == "cpu"
    sections = report["sections"]
    assert sections["cuda_tests"]["status"].startswith("skipped: needs CUDA")
    for name in SECTIONS[1:5]:
        assert sections[name]["status"] == "ok", (name, sections[name])

    losses = sections["losses"]["rows"]
    assert {(r["loss"], r["variant"]) for r in losses} == {
        (loss, variant)
        for loss in ("contrastive", "triplet", "npair", "lifted", "angular")
        for variant in ("base", "symm per anchor", "symm per pair")
    }
    assert all(r["eager_fwd_ms"] > 0 and r["eager_fwd_bwd_ms"] > 0 for r in losses)
    for row in (r for r in losses if r["loss"] == "triplet" and r["variant"] != "symm per pair"):
        compiled = row["compiled_fwd_ms"]  # a figure, or the compile failure recorded (never a crash)
        assert isinstance(compiled, float) or compiled.startswith(("compile failed: ", "compiled run failed: "))
    assert all("symm_over_base_eager" in r for r in losses if r["variant"] != "base")

    steps = sections["training_steps"]["rows"]
    timed = [r for r in steps if "bare_ms" in r]
    assert {(r["workload"].split(": ")[1], r["precision"]) for r in timed} == {
        (kind, p) for kind in ("CTL", "triplet+Symm") for p in ("fp32", "bf16")
    }
    assert all(r["recipe_over_bare"] == pytest.approx(r["recipe_ms"] / r["bare_ms"], rel=0.01) for r in timed)
    fp16 = [r["status"] for r in steps if r["precision"] == "fp16"]
    assert len(fp16) == 2 and all(status.startswith("skipped: fp16 autocast is a CUDA path") for status in fp16)

    evaluation = sections["evaluation"]["rows"]
    assert [(r["dataset"], r["protocol"].split(" ")[0]) for r in evaluation] == [
        ("Market-1501", "standard"),
        ("Market-1501", "centroid"),
        ("Market-1501", "k-reciprocal"),
        ("MSMT17", "standard"),
        ("MSMT17", "centroid"),
        ("SOP", "Recall@K"),
    ]
    assert all(r["seconds"] > 0 for r in evaluation)

    (train,) = sections["train_cli"]["rows"]
    assert train["steps"] == 6 and train["steps_per_epoch"] == 2  # 3 epochs x 2 batches (limit_train_batches)
    assert train["whole_epoch_images_per_s"] > 0 and train["bare_images_per_s"] > 0

    serve = sections["serve"]
    if serve["status"] == "ok":
        assert [r["clients"] for r in serve["rows"]] == [1, 16, "16 / 1"]
        assert serve["rows"][2]["images_per_s"] == pytest.approx(
            serve["rows"][1]["images_per_s"] / serve["rows"][0]["images_per_s"], rel=0.02
        )
    else:
        assert serve["status"].startswith("skipped: not installed")

    markdown = (tmp_path / "gpu.md").read_text()
    for name in SECTIONS:
        assert f"\n## {name}\n" in markdown
    assert "| loss | variant | eager fwd ms |" in markdown
    assert "| workload | precision | bare ms | recipe ms |" in markdown
    assert "| dataset | protocol | size |" in markdown
    assert markdown.count("\n|---|") >= 5  # a table for every section that ran
    print(f"quick CPU run: {seconds:.1f} s")


def test_cuda_test_selection(bench) -> None:
    from _gpu_pytest_cuda import needs_cuda

    assert needs_cuda("test_cuda_matches_cpu", [])
    assert needs_cuda("test_distances", ["needs a GPU"])
    assert needs_cuda("test_x", ["needs CUDA"])
    assert not needs_cuda("test_recall_at_k", [])
    assert not needs_cuda("test_recall_at_k", ["needs faiss"])


def test_fp16_step_skips_an_overflow_instead_of_raising(bench) -> None:
    from training import StepCounter, make_step

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    images, labels = torch.randn(3, 4), torch.zeros(3)
    counter = StepCounter()
    before = [p.detach().clone() for p in model.parameters()]
    overflow = make_step(model, lambda out, _: out.float().sum() * float("inf"), images, labels,
                         precision="fp16", counter=counter)  # fmt: skip
    overflow()
    assert counter.taken == 1 and counter.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # the step was skipped
    finite = make_step(model, lambda out, _: out.float().pow(2).mean(), images, labels, precision="fp16",
                       counter=counter)  # fmt: skip
    finite()
    assert counter.taken == 2 and counter.skipped == 1
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        make_step(model, lambda out, _: out.sum(), images, labels, precision="fp8")


def test_market_layout_generator_reads_back(bench, tmp_path: Path) -> None:
    from PIL import Image

    from _gpu_market import make_market
    from centrum.data import read_market1501

    counts = make_market(tmp_path, train_ids=5, train_images=12, query_ids=3, gallery_per_id=5, distractors=2, junk=2)
    assert counts == {"bounding_box_train": 12, "query": 3, "bounding_box_test": 3 * 5 + 2 + 2}
    splits = read_market1501(tmp_path)
    _, per_id = np.unique(splits.train.labels, return_counts=True)
    assert list(splits.train_class_ids) == [2, 4, 6, 8, 10]  # even ids for training, odd ones for testing
    assert per_id.tolist() == [3, 3, 2, 2, 2]  # 12 images over 5 identities
    assert sorted(splits.query.labels.tolist()) == [1, 3, 5] and set(splits.query.cameras.tolist()) == {1}
    gallery = splits.gallery
    assert len(gallery.labels) == 3 * 5 + 2  # junk (id -1) dropped by the reader, distractors (id 0) kept
    assert set(gallery.cameras[gallery.labels != 0].tolist()) == {2, 3, 4, 5, 6}  # every query has a valid match
    with Image.open(next((tmp_path / "bounding_box_train").iterdir())) as image:
        assert image.size == (128, 256) and image.format == "JPEG"


def test_tensorboard_reader_and_in_epoch_rate(bench, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from _gpu_processes import steady_rate, tensorboard_step_times

    start = time.time()
    writer = SummaryWriter(str(tmp_path))
    for step in (10, 20, 30):
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("train/lr", 0.1, step)
    writer.close()
    times = tensorboard_step_times(tmp_path)
    assert sorted(times) == [10, 20, 30]
    assert start - 1 <= times[10] <= times[20] <= times[30] <= time.time() + 1
    # 3 epochs of 100 steps, batch 64; the middle epoch (steps 101-199) logged at 110 (t = 5 s) and 190 (t = 7 s)
    logged = {50: 0.0, 110: 5.0, 150: 6.0, 190: 7.0, 250: 20.0}
    assert steady_rate(logged, per_epoch=100, epochs=3, batch=64) == pytest.approx(80 * 64 / 2.0)
    assert steady_rate({50: 0.0, 250: 9.0}, per_epoch=100, epochs=3, batch=64) is None


def test_pytest_report_counts(bench, tmp_path: Path) -> None:
    from _gpu_processes import junit_counts

    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.a" name="test_ok"/>'
        '<testcase classname="tests.a" name="test_gpu"><skipped message="needs CUDA"/></testcase>'
        '<testcase classname="tests.b" name="test_bad"><failure message="assert 1 == 2&#10;more">x</failure></testcase>'
        '<testcase classname="tests.c" name="test_err"><error message="fixture broke"/></testcase>'
        '<testcase classname="tests.a" name="test_ok2"/>'
        "</testsuite></testsuites>"
    )
    counts = junit_counts(report)
    assert counts == {
        "passed": 2,
        "failed": 1,
        "errors": 1,
        "skipped": 1,
        "failures": ["tests.b::test_bad: assert 1 == 2", "tests.c::test_err: fixture broke"],
    }


def test_spent_budget_skips_sections_and_still_writes_both_files(bench, tmp_path: Path) -> None:
    import gpu

    code = gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--sections", "losses,serve",
                     "--budget-s", "2"])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert {name: s["status"] for name, s in report["sections"].items()} == {
        "losses": "skipped: out of time",
        "serve": "skipped: out of time",
    }
    assert "## losses\n\nstatus: skipped: out of time" in (tmp_path / "gpu.md").read_text()


def test_bad_command_line_exits_2_naming_the_value(bench, capsys) -> None:
    import gpu

    with pytest.raises(SystemExit) as exit_info:
        gpu.main(["--device", "cpu", "--sections", "losses,trainning"])
    assert exit_info.value.code == 2
    assert "--sections: unknown trainning; choose from cuda_tests, losses" in capsys.readouterr().err
