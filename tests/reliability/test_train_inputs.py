"""Every bad input to `centrum train` through the command line: exit code 2, one line that names the
file or field at fault, never a traceback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from centrum.cli import main

GOOD = """\
name: tiny
data: {dataset: csv, root: ROOT, recipe: dml, image_size: [24, 24], p: 6, m: 4, num_workers: 0,
       transform_options: {scale: [0.8, 1.0], resize: 24}}
model: {backbone: small_cnn, bnneck: true}
objective: {kind: ctl}
optimizer: {lr: 3e-3, weight_decay: 0.0, warmup_epochs: 0, milestones: []}
trainer: {max_epochs: 1, accelerator: cpu, eval_every: 0, log_every_n_steps: 1}
evaluation: {protocols: [products]}
"""


@pytest.fixture(scope="module")
def stripes_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny users'-own-data CSV (path,label,camera,split): 6 training classes, 2 test classes, 8 images each."""
    root = tmp_path_factory.mktemp("tiny-data")
    rng = np.random.default_rng(0)
    lines = ["path,label,camera,split"]
    for split, labels in (("train", range(6)), ("query", range(10, 12)), ("gallery", range(10, 12))):
        (root / split).mkdir()
        for label in labels:
            for i in range(8 if split != "query" else 2):
                rel = f"{split}/{label}_{i}.png"
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / rel)
                lines.append(f"{rel},{label},0,{split}")
    (root / "images.csv").write_text("\n".join(lines) + "\n")
    return root / "images.csv"


@pytest.fixture
def good_config(tmp_path: Path, stripes_csv: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace("ROOT", str(stripes_csv)))
    return path


def fails_with(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI; check exit code 2, a one-line error naming ``expected``, no traceback."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, captured.out[-500:], err[-2000:])
    assert "Traceback" not in captured.err + captured.out
    error_lines = [line for line in err.splitlines() if line.startswith("centrum train: error:")]
    assert len(error_lines) == 1, err
    for text in expected:
        assert text in error_lines[0], error_lines[0]
    return error_lines[0]


def test_bad_config_files(tmp_path: Path, capsys, monkeypatch) -> None:
    fails_with(capsys, ["train", str(tmp_path / "missing.yaml")], "missing.yaml does not exist")
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: {max_epochs: 3\n")
    fails_with(capsys, ["train", str(broken)], "broken.yaml is not valid YAML")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    fails_with(capsys, ["train", str(listed)], "list.yaml", "a config must be a mapping")
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_epoch: 3\n")
    fails_with(capsys, ["train", str(typo)], "typo.yaml", "trainer.max_epoch", "did you mean 'max_epochs'?")
    monkeypatch.chdir(tmp_path)
    fails_with(capsys, ["train", "no_such_config"], "no_such_config does not exist")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_epochs=-1", "trainer.max_epochs must be >= 1, got -1"),
        ("trainer.max_epochs=ten", "trainer.max_epochs must be an integer"),
        ("trainer.eval_every=-1", "trainer.eval_every must be >= 0"),
        ("optimizer.lr=-1e-3", "optimizer.lr must be a number > 0, got -0.001"),
        ("optimizer.lr=fast", "optimizer.lr must be a number, got 'fast'"),
        ("optimizer.gamma=2", "optimizer.gamma must be in (0, 1]"),
        ("objective.triplet_margin=-0.3", "objective.triplet_margin must be >= 0"),
        ("objective.centroid_margin=-1", "objective.centroid_margin must be >= 0"),
        ("trainer.precision=banana", "trainer.precision must be one of"),
        ("trainer.compile=fast", "trainer.compile must be one of off, default, reduce-overhead"),
        ("trainer.channels_last=sometimes", "trainer.channels_last must be true, false or auto"),
        ("trainer.spread_check_images=1", "trainer.spread_check_images must be 0 (off) or >= 2"),
        ("data.p=0", "data.p must be >= 1"),
        ("trainer.max_epochs", "override 'trainer.max_epochs' must look like section.field=value"),
        ("data.image_size=[24,", "override 'data.image_size=[24,': the value is not valid YAML"),
        ("trainer.accelerator=tpu", "trainer.accelerator must be one of"),
    ],
)
def test_bad_overrides_name_the_field(good_config: Path, tmp_path: Path, capsys, override: str, expected: str) -> None:
    # overrides are accepted before and after options alike
    fails_with(capsys, ["train", str(good_config), "--out", str(tmp_path / "run"), override], expected)
    assert not (tmp_path / "run").exists()


def test_bad_device_says_no_cuda_is_visible(good_config: Path, tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    fails_with(
        capsys,
        ["train", str(good_config), "--device", "cuda", "--out", str(tmp_path / "r")],
        "no CUDA device is visible",
    )
    fails_with(
        capsys, ["train", str(good_config), "--device", "gpu", "--out", str(tmp_path / "r")], "trainer.accelerator=gpu"
    )
    fails_with(capsys, ["train", str(good_config), "--device", "quantum"], "trainer.accelerator must be one of")


def test_bad_runs_and_resume(good_config: Path, tmp_path: Path, capsys) -> None:
    fails_with(
        capsys, ["train", str(good_config), "--runs", "0", "--out", str(tmp_path / "r")], "runs must be at least 1"
    )
    fails_with(
        capsys,
        ["train", str(good_config), "--resume", "--out", str(tmp_path / "none")],
        "there is no run to resume in",
        "none",
    )
    fails_with(
        capsys,
        ["train", str(good_config), "--resume", "--runs", "2", "--out", str(tmp_path / "none")],
        "no run to resume",
    )
    # a run folder whose config differs: the differing fields are named
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"placeholder")
    (run / "config.yaml").write_text(
        good_config.read_text().replace("p: 6, m: 4", "p: 5, m: 4").replace("3e-3", "1e-3")
    )
    fails_with(
        capsys,
        ["train", str(good_config), "--resume", "--out", str(run)],
        "differs from the run's config.yaml in data.p, optimizer.lr",
    )
    # without --resume, an existing run is not overwritten
    fails_with(capsys, ["train", str(good_config), "--out", str(run)], "already holds a checkpoint", "--resume")


def test_resume_refuses_unreadable_or_unsafe_checkpoints(good_config: Path, tmp_path: Path, capsys) -> None:
    from centrum.training import load_config

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(load_config(good_config).to_yaml())
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"truncated")
    fails_with(capsys, ["train", str(good_config), "--resume", "--out", str(run)], "last.ckpt", "PyTorch file")
    marker = tmp_path / "created-by-pickle"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "extra": Payload()}, last)
    fails_with(capsys, ["train", str(good_config), "--resume", "--out", str(run)], "last.ckpt was refused")
    assert not marker.exists()
    torch.save({"state_dict": {}}, last)  # safe, but not a checkpoint of this version of `centrum train`
    fails_with(capsys, ["train", str(good_config), "--resume", "--out", str(run)], "last.ckpt was not written by")


def test_bad_data(good_config: Path, stripes_csv: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere" / "images.csv"
    fails_with(capsys, ["train", str(good_config), f"data.root={missing}", "--out", str(tmp_path / "r1")], "nowhere")
    # every training image unreadable and skipped: zero steps is an error, not a model
    root = tmp_path / "data"
    shutil.copytree(stripes_csv.parent, root)
    for image in (root / "train").glob("*.png"):
        image.write_bytes(b"not a png")
    argv = ["train", str(good_config), f"data.root={root / stripes_csv.name}", "data.on_error=skip"]
    fails_with(
        capsys,
        [*argv, "--out", str(tmp_path / "r2"), "--progress", "none"],
        "training made zero steps: all 48 training images",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(good_config: Path, tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        fails_with(capsys, ["train", str(good_config), "--out", str(locked / "run")], "locked")
    finally:
        locked.chmod(0o700)


def test_empty_config_is_named_and_no_run_folder_is_made(tmp_path: Path, capsys) -> None:
    """An empty file (or one of comments only) trained the defaults and failed on them, after making the run
    folder: "5 classes cannot fill batches of p=16"."""
    for text in ("", "# nothing yet\n\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        out = tmp_path / "run"
        fails_with(capsys, ["train", str(empty), "--out", str(out), "trainer.max_epochs=1"], "empty.yaml is empty")
        assert not out.exists()


def test_missing_data_root_is_named_before_a_run_folder_is_made(good_config: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    missing = tmp_path / "nowhere" / "images.csv"
    argv = ["train", str(good_config), f"data.root={missing}", "--out", str(out)]
    fails_with(capsys, argv, "data.root", str(missing))
    assert not out.exists()
    # omniglot: the message says where Omniglot comes from and how to point at it
    line = fails_with(
        capsys,
        ["train", str(good_config), "data.dataset=omniglot", f"data.root={tmp_path / 'omni'}", "--out", str(out)],
        "data.root",
        str(tmp_path / "omni"),
        "images_background.zip",
        "data.root=",
    )
    assert "github.com/brendenlake/omniglot" in line
    assert not out.exists()
    # a dataset that needs a root, with none given
    fails_with(capsys, ["train", str(good_config), "data.root=null", "--out", str(out)], "data.root is not set", "csv")
    assert not out.exists()
    # data.p larger than the training classes: named, before anything is made
    fails_with(capsys, ["train", str(good_config), "data.p=16", "--out", str(out)], "data.p=16", "6 classes")
    assert not out.exists()


def test_resume_with_fewer_epochs_leaves_the_run_alone(good_config: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", str(good_config), "trainer.max_epochs=2", "--out", str(out), "--progress", "none"]) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fails_with(
        capsys,
        ["train", str(good_config), "trainer.max_epochs=1", "--resume", "--out", str(out)],
        "has trained 2 epoch(s)",
        "trainer.max_epochs=1",
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_results_table_fits_and_says_what_centroids_use(good_config: Path, tmp_path: Path, capsys) -> None:
    """Two gallery classes: Acc@10..50 are 100 % by construction for the centroid row, so they are left out;
    the table fits 100 columns and the centroid row says that it uses the gallery's labels."""
    argv = ["train", str(good_config), "evaluation.protocols=[products, products-centroids]"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--progress", "none"]) == 0
    out = capsys.readouterr().out
    lines = out[: out.index("run folder:")].strip().splitlines()
    assert max(len(line) for line in lines) <= 100, lines
    header = lines[lines.index(next(line for line in lines if line.startswith("metrics in %"))) + 1]
    assert sorted(header.split()) == ["Acc@1", "mAP"], header
    centroid_rows = [line for line in lines if line.startswith("products-centroids (gallery labels) ")]
    assert len(centroid_rows) == 1, lines
