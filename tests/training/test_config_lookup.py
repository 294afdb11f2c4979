"""A shipped config by name or by its ``configs/...`` path works from any folder, not only the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

from centrum.cli import main
from centrum.cli.train import resolve_config, shipped_config_folders
from centrum.training import load_config

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_resolve_from_another_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = (REPO_CONFIGS / "fashion_mnist_ctl.yaml").resolve()
    for name in ("fashion_mnist_ctl", "fashion_mnist_ctl.yaml", "configs/fashion_mnist_ctl.yaml"):
        assert resolve_config(name).resolve() == expected, name
    assert load_config(resolve_config("fashion_mnist_ctl")).name == "fashion-mnist-ctl"


def test_a_local_file_or_configs_folder_comes_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    mine = tmp_path / "configs" / "fashion_mnist_ctl.yaml"
    mine.write_text("name: mine\n")
    assert resolve_config("fashion_mnist_ctl").resolve() == mine.resolve()
    assert resolve_config("configs/fashion_mnist_ctl.yaml").resolve() == mine.resolve()
    assert shipped_config_folders()[0] == Path("configs")


def test_unknown_config_says_where_configs_live(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        resolve_config("no_such_config")
    message = str(info.value)
    assert "no_such_config does not exist" in message and str(REPO_CONFIGS) in message
    assert "fashion_mnist_ctl" in message
    assert main(["train", "no_such_config"]) == 2
    assert str(REPO_CONFIGS) in capsys.readouterr().err
