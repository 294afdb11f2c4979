"""Loading weights: reports, checkpoint wrappers, prefixes, downloads (file:// and local HTTP), checksums."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from centrum.models import (
    PUBLISHED_WEIGHTS,
    ChecksumError,
    EmbeddingModel,
    build_backbone,
    build_model,
    default_cache_dir,
    download_file,
    load_pretrained,
)
from centrum.models.weights import PublishedWeights


def small_backbone() -> torch.nn.Module:
    return build_backbone("small_cnn", widths=(4, 8))


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in small_backbone().state_dict().items()}
    path = tmp_path / "served" / "small_cnn-weights.pth"
    path.parent.mkdir()
    torch.save(state, path)
    return path, state


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def http_server(checkpoint: tuple[Path, dict]) -> Iterator[tuple[str, list[str]]]:
    """Serve the checkpoint's folder on 127.0.0.1; yield (base URL, list of requested paths)."""
    requests: list[str] = []
    handler = functools.partial(type("Handler", (_CountingHandler,), {"requests": requests}),
                                directory=str(checkpoint[0].parent))  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_loaded(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    own = module.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(own[prefix + key], value, msg=key)


def test_load_from_local_file(checkpoint: tuple[Path, dict]) -> None:
    path, state = checkpoint
    backbone = small_backbone()
    report = load_pretrained(backbone, path, sha256=sha256_hex(path))
    assert report.complete and not report.unexpected
    assert len(report.loaded) == len(state)
    assert_loaded(backbone, state)
    assert "loaded 12 tensors" in str(report)


def test_round_trip_of_a_whole_model_checkpoint(tmp_path: Path) -> None:
    model = build_model("small_cnn", num_classes=5, widths=(4, 8)).eval()
    x = torch.randn(3, 3, 16, 16)
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "config": {"backbone": "small_cnn"}}, path)
    fresh = build_model("small_cnn", num_classes=5, widths=(4, 8)).eval()
    report = load_pretrained(fresh, path, strict=True)
    assert report.complete
    for key in ("raw", "bn", "logits"):
        torch.testing.assert_close(fresh(x)[key], model(x)[key])


def test_missing_path_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth does not exist"):
        load_pretrained(small_backbone(), tmp_path / "nowhere.pth")


def test_report_lists_missing_unexpected_and_mismatched_keys() -> None:
    backbone = small_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    state = {k: torch.full_like(v.float(), 0.5).to(v.dtype) for k, v in before.items()}
    del state["stages.1.1.weight"]
    state["extra.weight"] = torch.ones(3)
    state["stages.0.0.weight"] = torch.ones(4, 3, 5, 5)  # wrong kernel size
    with pytest.warns(UserWarning, match="1 missing, 1 unexpected, 1 with mismatched shapes"):
        report = load_pretrained(backbone, state)
    assert report.missing == ["stages.1.1.weight"]
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == [("stages.0.0.weight", (4, 3, 5, 5), (4, 3, 3, 3))]
    assert not report.complete
    after = backbone.state_dict()
    torch.testing.assert_close(after["stages.0.0.weight"], before["stages.0.0.weight"])  # not loaded
    torch.testing.assert_close(after["stages.1.1.weight"], before["stages.1.1.weight"])  # left alone
    assert torch.all(after["stages.1.0.weight"] == 0.5)
    text = report.summary()
    assert "(4, 3, 5, 5) vs model (4, 3, 3, 3)" in text and "extra.weight" in text


def test_strict_loading_raises_with_the_counts() -> None:
    state = dict(small_backbone().state_dict())
    state["extra.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match="0 missing, 1 unexpected, 0 with mismatched shapes"):
        load_pretrained(small_backbone(), state, strict=True)


def test_checkpoint_of_another_model_is_refused_with_the_counts() -> None:
    other = build_backbone("small_cnn", widths=(6, 12)).state_dict()
    with pytest.raises(ValueError, match=r"no tensor matched .*0 missing, 0 unexpected, 10 with mismatched shapes"):
        load_pretrained(small_backbone(), other)
    with pytest.raises(ValueError, match="Is it a checkpoint of another model"):
        load_pretrained(small_backbone(), {"fc.weight": torch.ones(2, 2)})


def test_not_a_state_dict_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="holds no state dict"):
        load_pretrained(small_backbone(), path)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": s},
        lambda s: {f"module.{k}": v for k, v in s.items()},
        lambda s: {"state_dict": {f"model.backbone.{k}": v for k, v in s.items()}, "hyper_parameters": {"lr": 1}},
    ],
    ids=["state_dict", "model", "module-prefix", "lightning"],
)
def test_checkpoint_wrappers_and_prefixes_are_unwrapped(wrap, checkpoint: tuple[Path, dict]) -> None:
    _, state = checkpoint
    backbone = small_backbone()
    report = load_pretrained(backbone, wrap(state))
    assert report.complete and not report.unexpected
    assert_loaded(backbone, state)


def test_backbone_weights_load_into_a_whole_model_and_back(checkpoint: tuple[Path, dict]) -> None:
    _, state = checkpoint
    model = EmbeddingModel(small_backbone(), num_classes=3)
    with pytest.warns(UserWarning, match="partly initialised"):  # the head has no weights in a backbone file
        report = load_pretrained(model, state)
    assert set(report.missing) == {"bnneck.weight", "bnneck.bias", "bnneck.running_mean", "bnneck.running_var",
                                   "classifier.weight"}  # fmt: skip
    assert_loaded(model, state, prefix="backbone.")
    backbone = small_backbone()
    report = load_pretrained(backbone, model.state_dict())
    assert report.complete
    assert set(report.unexpected) == {k for k in model.state_dict() if not k.startswith("backbone.")}


def test_download_over_file_url_into_the_cache(checkpoint: tuple[Path, dict], tmp_path: Path) -> None:
    path, state = checkpoint
    cache = tmp_path / "cache"
    backbone = small_backbone()
    report = load_pretrained(backbone, path.as_uri(), sha256=sha256_hex(path), cache_dir=cache, progress=False)
    assert report.complete
    assert_loaded(backbone, state)
    cached = cache / "checkpoints" / path.name
    assert cached.read_bytes() == path.read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no partial file left


def test_download_over_local_http_server_is_cached(http_server, checkpoint, tmp_path: Path, capsys) -> None:
    base, requests = http_server
    path, state = checkpoint
    url = f"{base}/{path.name}"
    for _ in range(2):
        backbone = small_backbone()
        load_pretrained(backbone, url, sha256=sha256_hex(path)[:8], cache_dir=tmp_path / "cache")
        assert_loaded(backbone, state)
    assert requests == [f"/{path.name}"]  # the second load came from the cache
    assert "downloading small_cnn-weights.pth" in capsys.readouterr().err


def test_checksum_mismatch_names_the_file_and_both_hashes(http_server, checkpoint, tmp_path: Path) -> None:
    base, _ = http_server
    path, _ = checkpoint
    url = f"{base}/{path.name}"
    dest = tmp_path / "out" / "weights.pth"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download_file(url, dest, sha256=wrong, progress=False)
    message = str(info.value)
    assert url in message and wrong in message and sha256_hex(path) in message
    assert list(dest.parent.iterdir()) == []  # neither the file nor its partial download
    assert isinstance(info.value, ValueError)


def test_corrupted_cached_file_is_reported(checkpoint, tmp_path: Path) -> None:
    path, _ = checkpoint
    cache = tmp_path / "cache"
    load_pretrained(small_backbone(), path.as_uri(), cache_dir=cache, progress=False)
    cached = cache / "checkpoints" / path.name
    cached.write_bytes(b"garbage")
    with pytest.raises(ChecksumError, match=f"checksum mismatch for {cached}"):
        load_pretrained(small_backbone(), path.as_uri(), sha256=sha256_hex(path), cache_dir=cache)


def test_local_file_checksum_is_checked(checkpoint) -> None:
    path, _ = checkpoint
    with pytest.raises(ChecksumError, match="expected SHA-256 deadbeef"):
        load_pretrained(small_backbone(), path, sha256="deadbeef")


@pytest.mark.parametrize("bad", ["abc", "xyz12345", "0" * 65])
def test_malformed_sha256_is_rejected(bad: str, checkpoint) -> None:
    with pytest.raises(ValueError, match="sha256 must be 8 to 64 hex digits"):
        load_pretrained(small_backbone(), checkpoint[0], sha256=bad)


def test_download_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs an http://, https:// or file:// URL"):
        download_file("ftp://example.org/x.pth", tmp_path / "x.pth")


def test_unreachable_url_leaves_no_partial_file(tmp_path: Path) -> None:
    missing = (tmp_path / "absent.pth").as_uri()
    with pytest.raises(OSError, match="could not download"):
        download_file(missing, tmp_path / "dest.pth", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CENTRUM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CENTRUM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "centrum"


def test_imagenet_weights_go_through_the_published_url_and_checksum(
    monkeypatch: pytest.MonkeyPatch, http_server, tmp_path: Path
) -> None:
    base, requests = http_server
    served = tmp_path / "served" / "resnet50-test.pth"
    reference = build_backbone("resnet50")
    torch.save({**reference.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, served)
    monkeypatch.setenv("CENTRUM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        PUBLISHED_WEIGHTS, "resnet50", PublishedWeights(f"{base}/{served.name}", sha256_hex(served)[:8])
    )
    model = build_model("resnet50", pretrained="imagenet", num_classes=4)
    assert requests == ["/resnet50-test.pth"]
    assert (tmp_path / "cache" / "checkpoints" / served.name).is_file()
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)

    monkeypatch.setitem(PUBLISHED_WEIGHTS, "resnet50", PublishedWeights(f"{base}/{served.name}", "0badc0de"))
    monkeypatch.setenv("CENTRUM_CACHE", str(tmp_path / "other-cache"))
    with pytest.raises(ChecksumError, match="expected SHA-256 0badc0de"):
        build_backbone("resnet50", pretrained="imagenet")
