"""``centrum.io.replace_directory``: how ``index build --overwrite`` puts a new index folder in place of the old
one: the new contents in the target, the old ones gone, nothing left beside them; with the atomic swap and with
the two-rename fallback used where the swap is not available."""

from __future__ import annotations

import pytest

import centrum.io as cio


@pytest.mark.parametrize("swap", [True, False], ids=["atomic swap", "two renames"])
def test_the_new_folder_replaces_the_old_and_nothing_is_left(tmp_path, monkeypatch, swap):
    if not swap:
        monkeypatch.setattr(cio, "_exchange", lambda a, b: False)
    old, new = tmp_path / "index", tmp_path / ".index.build.tmp"
    old.mkdir()
    (old / "index.npz").write_bytes(b"old")
    (old / "backend.json").write_text("{}")
    new.mkdir()
    (new / "index.npz").write_bytes(b"new")
    assert cio.replace_directory(new, old) == old
    assert sorted(p.name for p in old.iterdir()) == ["index.npz"]
    assert (old / "index.npz").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_missing_target_is_simply_created(tmp_path):
    new = tmp_path / ".staging"
    new.mkdir()
    (new / "a").write_text("x")
    cio.replace_directory(new, tmp_path / "index")
    assert (tmp_path / "index" / "a").read_text() == "x" and not new.exists()
