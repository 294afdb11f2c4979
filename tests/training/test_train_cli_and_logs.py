"""`centrum train` for a person: config names, overrides anywhere, --help with examples, progress lines,
Lightning's noise silenced, and the curves picture it writes."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from centrum.cli import main
from centrum.reports import plot_training_curves


def write_config(tmp_path: Path, tiny_config, stripes_csv: Path) -> Path:
    config = tiny_config("ctl", max_epochs=2, eval_every=1)
    config.data.root = str(stripes_csv)
    path = tmp_path / "configs" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(config.to_yaml())
    return path


def test_train_by_name_with_late_overrides_and_plain_progress(
    stripes_csv: Path, tiny_config, tmp_path: Path, monkeypatch, capfd
) -> None:
    """capfd, not capsys: Lightning's banners go to a logging handler bound to the process's stderr."""
    write_config(tmp_path, tiny_config, stripes_csv)
    monkeypatch.chdir(tmp_path)
    # a config name found in ./configs/, an override after --out, plain lines (stdout is not a terminal)
    assert main(["train", "tiny", "--out", "run", "trainer.max_epochs=2", "--progress", "auto"]) == 0
    captured = capfd.readouterr()
    lines = captured.out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all(" loss " in line and " lr " in line for line in epochs)
    assert sum(line.strip().startswith("evaluation: products mAP") for line in lines) == 2
    for noise in ("Tip:", "GPU available", "TPU available", "LeafSpec", "does not have many workers"):
        assert noise not in captured.out + captured.err
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.csv", "model.ckpt", "results.json", "curves.png"} <= {p.name for p in run.iterdir()}
    assert Image.open(run / "curves.png").size[0] > 600
    # written atomically: no temporary file left behind, ordinary permissions, strict JSON
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "results.json", "curves.png", "metrics.csv", "checkpoints/last.ckpt"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    json.loads((run / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"results.json has {c}"))


def test_unknown_config_name_lists_the_shipped_configs(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "alpha.yaml").write_text("name: alpha\n")
    (tmp_path / "configs" / "beta.yaml").write_text("name: beta\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "gamma"]) == 2
    err = capsys.readouterr().err
    assert "config file gamma does not exist; configs in configs/: alpha, beta" in err
    assert len(err.strip().splitlines()) == 1


def test_train_help_shows_examples_and_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "centrum train configs/fashion_mnist_ctl.yaml" in out
    assert "(default: auto)" in out and "(default: 1)" in out and "runs/<config name>" in out
    assert "{auto,bar,plain,none}" in out


def test_curves_are_a_grid_of_titled_panels_without_constants(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    metrics = tmp_path / "metrics.csv"
    with metrics.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["epoch", "step", "train/loss_epoch", "train/lr", "eval/products/mAP", "eval/products/num_queries"]
        )
        writer.writerows([[0, 3, 1.0, 0.1, 0.2, 24], [1, 7, 0.5, 0.01, 0.3, 24], [2, 11, 0.4, 0.01, 0.35, 24]])
    figures = []
    real_close = plt.close
    plt.close = lambda fig=None: figures.append(fig)  # keep the figure to look at it
    try:
        plot_training_curves(metrics, tmp_path / "c.png")
    finally:
        plt.close = real_close
    fig = figures[-1]
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title() for ax in visible) == ["learning rate", "products mAP (test)", "training loss"]
    for ax in visible:
        assert ax.get_xlabel() == "epoch"
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks)
    real_close(fig)
    assert Image.open(tmp_path / "c.png").size[0] > Image.open(tmp_path / "c.png").size[1]
