"""Every bad input of ``centrum embed``, ``evaluate``, ``index build|search`` and ``search``: exit code 2 and
one line on stderr that names the file, folder, field or value at fault, never a traceback.

Each case builds its bad input in a fresh folder from a valid checkpoint, image folder, .npz and index.
Most run in-process (``centrum.cli.main``; an uncaught exception would fail the test with its traceback);
a few run the real ``python -m centrum`` to check the whole path to the exit code.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch

from centrum.cli import main
from inference.fake_checkpoint import write_checkpoint, write_class_folders


class _CreatesAFile:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A checkpoint, an image folder, its embeddings, a per-image and a centroid index."""
    root = tmp_path_factory.mktemp("valid")
    checkpoint, _ = write_checkpoint(root / "model.ckpt")
    images = write_class_folders(root / "images", {"cat": [1, 2], "dog": [3, 4]})
    npz = root / "emb.npz"
    assert main(["embed", str(images), "--checkpoint", str(checkpoint), "--out", str(npz), "--device", "cpu"]) == 0
    assert main(["index", "build", "--embeddings", str(npz), "--out", str(root / "index")]) == 0
    assert main(["index", "build", "--embeddings", str(npz), "--out", str(root / "centroids"), "--centroids"]) == 0
    return {
        "checkpoint": checkpoint,
        "images": images,
        "npz": npz,
        "index": root / "index",
        "centroids": root / "centroids",
    }


def _truncated(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    return dst


def _npz_with(valid, dst: pathlib.Path, **changes) -> pathlib.Path:
    with np.load(valid["npz"]) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez(dst, **arrays)
    return dst


def _copy_index(valid, dst: pathlib.Path, damage: Callable[[pathlib.Path], None]) -> pathlib.Path:
    dst.mkdir()
    (dst / "index.npz").write_bytes((valid["index"] / "index.npz").read_bytes())
    damage(dst / "index.npz")
    return dst


def _evil_checkpoint(valid, dst: pathlib.Path) -> pathlib.Path:
    checkpoint = torch.load(valid["checkpoint"], weights_only=True)
    checkpoint["callbacks"] = {"x": _CreatesAFile(dst.parent / "pwned")}
    torch.save(checkpoint, dst)
    return dst


def _a_file(path: pathlib.Path) -> pathlib.Path:
    path.write_text("not a folder")
    return path


# (case id, builds argv from (valid, tmp), text the single error line must contain)
CASES: list[tuple[str, Callable, str]] = [
    # embed
    ("embed: checkpoint missing", lambda v, t: ["embed", str(v["images"]), "--checkpoint", str(t / "no.ckpt"),
        "--out", str(t / "o.npz")], "no.ckpt does not exist"),
    ("embed: checkpoint truncated", lambda v, t: ["embed", str(v["images"]), "--checkpoint",
        str(_truncated(v["checkpoint"], t / "cut.ckpt")), "--out", str(t / "o.npz")], "cut.ckpt could not be read"),
    ("embed: checkpoint is a text file", lambda v, t: ["embed", str(v["images"]), "--checkpoint",
        str(_text(t / "notes.ckpt")), "--out", str(t / "o.npz")],
        "notes.ckpt is not a PyTorch file (it may be damaged, or be another kind of file)"),
    ("embed: checkpoint is empty", lambda v, t: ["embed", str(v["images"]), "--checkpoint",
        str(_empty(t / "empty.ckpt")), "--out", str(t / "o.npz")], "empty.ckpt is empty (0 bytes)"),
    ("embed: checkpoint not centrum's", lambda v, t: ["embed", str(v["images"]), "--checkpoint",
        str(_save(t / "other.ckpt", {"state_dict": {}})), "--out", str(t / "o.npz")], "other.ckpt is not a centrum"),
    ("embed: checkpoint runs code", lambda v, t: ["embed", str(v["images"]), "--checkpoint",
        str(_evil_checkpoint(v, t / "evil.ckpt")), "--out", str(t / "o.npz")], "evil.ckpt was refused"),
    ("embed: image path missing", lambda v, t: ["embed", str(t / "nowhere"), "--checkpoint", str(v["checkpoint"]),
        "--out", str(t / "o.npz")], "nowhere is neither an image file nor a folder"),
    ("embed: unreadable image", lambda v, t: ["embed", str(_bad_image(t / "bad.png")), "--checkpoint",
        str(v["checkpoint"]), "--out", str(t / "o.npz")], "bad.png"),
    ("embed: out is not .npz", lambda v, t: ["embed", str(v["images"]), "--checkpoint", str(v["checkpoint"]),
        "--out", str(t / "o.txt")], "o.txt must end in .npz"),
    ("embed: out folder is a file", lambda v, t: ["embed", str(v["images"]), "--checkpoint", str(v["checkpoint"]),
        "--out", str(_a_file(t / "file") / "o.npz")], "file"),
    ("embed: cuda without a GPU", lambda v, t: ["embed", str(v["images"]), "--checkpoint", str(v["checkpoint"]),
        "--out", str(t / "o.npz"), "--device", "cuda"], "no CUDA device is visible"),
    ("embed: device not understood", lambda v, t: ["embed", str(v["images"]), "--checkpoint", str(v["checkpoint"]),
        "--out", str(t / "o.npz"), "--device", "gpu-please"], "'gpu-please' is not understood"),
    # evaluate
    ("evaluate: npz missing", lambda v, t: ["evaluate", "--embeddings", str(t / "no.npz"), "--protocol", "dml"],
        "no.npz does not exist"),
    ("evaluate: npz truncated", lambda v, t: ["evaluate", "--embeddings", str(_truncated(v["npz"], t / "cut.npz")),
        "--protocol", "dml"], "cut.npz is not a readable .npz"),
    ("evaluate: npz not a zip", lambda v, t: ["evaluate", "--embeddings", str(_text(t / "text.npz")),
        "--protocol", "dml"], "text.npz is not a readable .npz"),
    ("evaluate: string labels", lambda v, t: ["evaluate", "--embeddings",
        str(_npz_with(v, t / "s.npz", labels=np.array(["cat", "cat", "dog", "dog"]))), "--protocol", "dml"],
        "array labels must hold integers"),
    ("evaluate: pickled array", lambda v, t: ["evaluate", "--embeddings",
        str(_npz_with(v, t / "p.npz", labels=np.array([_CreatesAFile(t / "pwned")] * 4, dtype=object))),
        "--protocol", "dml"], "p.npz is not a readable .npz"),
    ("evaluate: json folder is a file", lambda v, t: ["evaluate", "--embeddings", str(v["npz"]), "--protocol", "dml",
        "--json", str(_a_file(t / "file") / "m.json")], "file"),
    ("evaluate: cuda without a GPU", lambda v, t: ["evaluate", "--checkpoint", str(v["checkpoint"]), "--device",
        "cuda"], "no CUDA device is visible"),
    ("evaluate: flip without checkpoint", lambda v, t: ["evaluate", "--embeddings", str(v["npz"]), "--protocol",
        "dml", "--flip"], "--flip embeds images: it needs --checkpoint"),
    # index build
    ("index build: npz truncated", lambda v, t: ["index", "build", "--embeddings",
        str(_truncated(v["npz"], t / "cut.npz")), "--out", str(t / "i")], "cut.npz is not a readable .npz"),
    ("index build: npz of random bytes", lambda v, t: ["index", "build", "--embeddings",
        str(_random_bytes(t / "noise.npz")), "--out", str(t / "i")],
        "noise.npz is not a readable .npz archive: it is not a valid .npz file (damaged, or not an .npz file"),
    ("index build: a .npy given as .npz", lambda v, t: ["index", "build", "--embeddings",
        str(_npy(t / "one.npz")), "--out", str(t / "i")],
        "one.npz is not a readable .npz archive: it is a single-array"),
    ("index search: index.npz of random bytes", lambda v, t: ["index", "search",
        str(_copy_index(v, t / "rnd", lambda p: _random_bytes(p))), "--queries", str(v["npz"])],
        "index.npz is not a readable centrum index: it is not a valid .npz file"),
    ("index build: string labels", lambda v, t: ["index", "build", "--embeddings",
        str(_npz_with(v, t / "s.npz", labels=np.array(["cat", "cat", "dog", "dog"]))), "--out", str(t / "i")],
        "array labels must hold integers"),
    ("index build: 1-d embeddings", lambda v, t: ["index", "build", "--embeddings",
        str(_npz_with(v, t / "e.npz", embeddings=np.zeros(4, np.float32))), "--out", str(t / "i")],
        "embeddings must be a 2-D (N x D) float matrix"),
    ("index build: out is a file", lambda v, t: ["index", "build", "--embeddings", str(v["npz"]), "--out",
        str(_a_file(t / "file"))], "file: it exists and is not a directory"),
    ("index build: out under a file", lambda v, t: ["index", "build", "--embeddings", str(v["npz"]), "--out",
        str(_a_file(t / "file") / "i")], "file"),
    ("index build: centroids of unlabelled images", lambda v, t: ["index", "build", "--embeddings",
        str(_npz_with(v, t / "u.npz", labels=np.array([-1, 0, 1, 1]))), "--out", str(t / "i"), "--centroids"],
        "have no class (label -1)"),
    # index search
    ("index search: no index", lambda v, t: ["index", "search", str(t / "none"), "--queries", str(v["npz"])],
        "no index at"),
    ("index search: index truncated", lambda v, t: ["index", "search",
        str(_copy_index(v, t / "cut", lambda p: p.write_bytes(p.read_bytes()[:300]))), "--queries", str(v["npz"])],
        "index.npz is not a readable centrum index"),
    ("index search: index not a zip", lambda v, t: ["index", "search",
        str(_copy_index(v, t / "txt", lambda p: p.write_text("x"))), "--queries", str(v["npz"])],
        "index.npz is not a readable centrum index"),
    ("index search: queries truncated", lambda v, t: ["index", "search", str(v["index"]), "--queries",
        str(_truncated(v["npz"], t / "cut.npz"))], "cut.npz is not a readable .npz"),
    ("index search: queries of another dimension", lambda v, t: ["index", "search", str(v["index"]), "--queries",
        str(_npz_with(v, t / "d.npz", embeddings=np.zeros((2, 3), np.float32), labels=np.zeros(2, np.int64)))],
        "d.npz holds 3-d embeddings"),
    ("index search: string query labels", lambda v, t: ["index", "search", str(v["index"]), "--queries",
        str(_npz_with(v, t / "s.npz", labels=np.array(["a", "b", "c", "d"])))], "array labels must hold integers"),
    ("index search: k = 0", lambda v, t: ["index", "search", str(v["index"]), "--queries", str(v["npz"]), "-k", "0"],
        "-k must be a positive integer"),
    ("index search: json under a file", lambda v, t: ["index", "search", str(v["index"]), "--queries", str(v["npz"]),
        "--json", str(_a_file(t / "file") / "r.json")], "file"),
    # search
    ("search: centroid index with --picture", lambda v, t: ["search", str(v["images"]), "--checkpoint",
        str(v["checkpoint"]), "--index", str(v["centroids"]), "--picture", str(t / "p.png")], "centroid index"),
    ("search: no index", lambda v, t: ["search", str(v["images"]), "--checkpoint", str(v["checkpoint"]), "--index",
        str(t / "none")], "no index at"),
    ("search: index truncated", lambda v, t: ["search", str(v["images"]), "--checkpoint", str(v["checkpoint"]),
        "--index", str(_copy_index(v, t / "cut", lambda p: p.write_bytes(p.read_bytes()[:300])))],
        "is not a readable centrum index"),
    ("search: cuda without a GPU", lambda v, t: ["search", str(v["images"]), "--checkpoint", str(v["checkpoint"]),
        "--index", str(v["index"]), "--device", "cuda"], "no CUDA device is visible"),
    ("search: checkpoint runs code", lambda v, t: ["search", str(v["images"]), "--checkpoint",
        str(_evil_checkpoint(v, t / "evil.ckpt")), "--index", str(v["index"])], "evil.ckpt was refused"),
    ("search: model of another dimension", lambda v, t: ["search", str(v["images"]), "--checkpoint",
        str(write_checkpoint(t / "metric.ckpt", kind="metric")[0]), "--index", str(v["index"])],
        "16-d embeddings but the index"),
    ("search: picture not an image name", lambda v, t: ["search", str(v["images"]), "--checkpoint",
        str(v["checkpoint"]), "--index", str(v["index"]), "--picture", str(t / "p.txt")], "p.txt must end in .png"),
]  # fmt: skip


def _save(path: pathlib.Path, obj) -> pathlib.Path:
    torch.save(obj, path)
    return path


def _text(path: pathlib.Path) -> pathlib.Path:
    path.write_text("not an archive")
    return path


def _empty(path: pathlib.Path) -> pathlib.Path:
    path.write_bytes(b"")
    return path


def _random_bytes(path: pathlib.Path) -> pathlib.Path:
    # fixed bytes that start like neither a zip archive nor a pickle, as most random files do
    path.write_bytes(bytes(np.random.default_rng(3).integers(0, 128, 4096, dtype=np.uint8)))
    return path


def _npy(path: pathlib.Path) -> pathlib.Path:
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((2, 3), np.float32))
    return path


def _bad_image(path: pathlib.Path) -> pathlib.Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return path


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_it(valid, tmp_path, capsys, build, expected):
    if "CUDA" in expected and torch.cuda.is_available():  # pragma: no cover
        pytest.skip("a GPU is visible")
    argv = build(valid, tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"centrum {argv[0]}: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err
    assert "allow_pickle" not in err and not lines[0].rstrip().endswith(": 101")  # numpy's and torch's own words
    assert not (tmp_path / "pwned").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["embed", "evaluate", "index build", "index search"])
def test_read_only_output_folder(valid, tmp_path, capsys, command):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        argv = {
            "embed": ["embed", str(valid["images"]), "--checkpoint", str(valid["checkpoint"]), "--out",
                      str(folder / "o.npz")],
            "evaluate": ["evaluate", "--embeddings", str(valid["npz"]), "--protocol", "dml", "--json",
                         str(folder / "m.json")],
            "index build": ["index", "build", "--embeddings", str(valid["npz"]), "--out", str(folder / "i")],
            "index search": ["index", "search", str(valid["index"]), "--queries", str(valid["npz"]), "--json",
                             str(folder / "r.json")],
        }[command]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(folder) in err and "Traceback" not in err
    finally:
        folder.chmod(0o755)


def test_the_real_command_exits_2_without_a_traceback(valid, tmp_path):
    src = str(pathlib.Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for argv, expected in (
        (["index", "search", str(valid["index"]), "--queries", str(_truncated(valid["npz"], tmp_path / "c.npz"))],
         "c.npz is not a readable .npz"),
        (["evaluate", "--embeddings", str(_npz_with(valid, tmp_path / "s.npz", labels=np.array(["a"] * 4))),
          "--protocol", "dml"], "array labels must hold integers"),
    ):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "centrum", *argv], capture_output=True, text=True, env=env)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr
        assert "Traceback" not in done.stderr
