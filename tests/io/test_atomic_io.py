"""Atomic writes leave the old file intact on failure; safe loading refuses pickled code."""

from __future__ import annotations

import os
import pickle
import stat

import numpy as np
import pytest
import torch

from centrum.io import atomic_write, atomic_write_json, safe_torch_load, save_npz


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("{half")
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_leftover_temporary_is_removed_and_permissions_are_normal(tmp_path):
    target = tmp_path / "e.npz"
    (tmp_path / ".e.npz.abc123.tmp").write_bytes(b"junk")
    old = os.umask(0o022)
    try:
        save_npz(target, x=np.arange(3))
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with np.load(target) as data:
        assert data["x"].tolist() == [0, 1, 2]


def test_json_refuses_infinity(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"d": float("inf")})
    assert not (tmp_path / "x.json").exists()


def test_unwritable_folder_names_it(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        atomic_write_json(tmp_path / "missing" / "x.json", {})


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_safe_load_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.ckpt"
    with open(bad, "wb") as handle:
        pickle.dump({"state_dict": _Payload(str(marker))}, handle)
    with pytest.raises(ValueError, match="refused"):
        safe_torch_load(bad, what="checkpoint")
    assert not marker.exists()
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.ones(2), "meta": {"name": "x"}}, good)
    assert safe_torch_load(good)["meta"] == {"name": "x"}
