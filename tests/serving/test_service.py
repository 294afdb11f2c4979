"""The service over real HTTP (uvicorn on 127.0.0.1, httpx): search, enrol, delete, auth, thumbnails, bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from live_server import API_KEY, png_bytes
from PIL import Image

from centrum.cli import main
from centrum.inference import TorchEmbedder


def _files(*images, name="q.png"):
    return [("image", (f"{i}-{name}", png_bytes(im), "image/png")) for i, im in enumerate(images)]


@pytest.fixture(scope="module")
def enrolled(server, drawings):
    """Classes a, b, c enrolled with 4, 4, 3 drawings (each class one Omniglot character)."""
    images, _ = drawings
    ids = {}
    with server.client(headers=server.auth()) as client:
        for name, start, count in (("a", 0, 4), ("b", 4, 4), ("c", 8, 3)):
            r = client.post(f"/classes/{name}/images", files=_files(*images[start : start + count]))
            assert r.status_code == 201, r.text
            assert r.json()["count"] == count
            ids[name] = r.json()["ids"]
    return ids


def test_health_and_page(server, enrolled):
    with server.client() as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["images"] == 11 and health["classes"] == 3
        assert health["dim"] == 128 and "small_cnn" in health["model"] and health["auth"] is True
        page = client.get("/")
        assert page.status_code == 200 and "<title>centrum" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # every asset is local
        assert client.get("/openapi.json").json()["paths"].keys() >= {"/search", "/classes/{name}/images"}
        assert client.get("/docs").status_code == 200


def test_search_images_finds_the_enrolled_image_first(server, enrolled, drawings):
    images, _ = drawings
    with server.client() as client:
        r = client.post("/search", params={"k": 5}, files=_files(images[5], images[9]))
        assert r.status_code == 200, r.text
        first, second = r.json()["results"]
        assert len(first["hits"]) == 5
        assert first["hits"][0]["id"] == enrolled["b"][1] and first["hits"][0]["class"] == "b"
        assert abs(first["hits"][0]["distance"]) < 1e-5
        assert second["hits"][0]["id"] == enrolled["c"][1]
        distances = [h["distance"] for h in first["hits"]]
        assert distances == sorted(distances)
        assert len(client.post("/search", params={"k": 50}, files=_files(images[0])).json()["results"][0]["hits"]) == 11


def test_search_centroids_is_the_running_mean(server, enrolled, drawings, model_files):
    """The service's centroid distances equal 1 - cos(query, mean of the class's normalised embeddings)."""
    images, _ = drawings
    local = TorchEmbedder.from_checkpoint(model_files["checkpoint"])
    emb = local.embed_images(images[:11])
    centroids = {"a": emb[0:4].mean(0), "b": emb[4:8].mean(0), "c": emb[8:11].mean(0)}
    query = local.embed_images([images[13]])[0]
    expected = {n: 1 - float(query @ c / np.linalg.norm(c)) for n, c in centroids.items()}
    with server.client() as client:
        r = client.post("/search", params={"k": 10, "mode": "centroids"}, files=_files(images[13]))
        hits = r.json()["results"][0]["hits"]
    assert [h["class"] for h in hits] == sorted(expected, key=expected.get)
    for h in hits:
        assert h["distance"] == pytest.approx(expected[h["class"]], abs=1e-4)
        assert h["count"] == len(enrolled[h["class"]]) and h["example_id"] == enrolled[h["class"]][0]


def test_thumbnails(server, enrolled):
    with server.client() as client:
        r = client.get(f"/images/{enrolled['a'][0]}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(r.content))
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
        missing = client.get("/images/99999")
        assert missing.status_code == 404 and "99999" in missing.json()["detail"]


def test_writes_need_a_valid_key_reads_do_not(server, drawings):
    images, _ = drawings
    with server.client() as client:
        r = client.post("/classes/x/images", files=_files(images[0]))
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        r = client.post("/classes/x/images", files=_files(images[0]), headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403
        assert client.delete("/classes/a").status_code == 401
        assert client.delete("/images/0", headers={"Authorization": "Basic abc"}).status_code == 401
        assert "x" not in {c["name"] for c in client.get("/classes").json()["classes"]}
        ok = client.post("/classes/x/images", files=_files(images[20]), headers={"Authorization": "Bearer other-key"})
        assert ok.status_code == 201
        assert client.delete("/classes/x", headers={"Authorization": f"Bearer {API_KEY}"}).json()["deleted_images"] == 1


def test_delete_image_and_class(server, drawings):
    images, _ = drawings
    with server.client(headers=server.auth()) as client:
        ids = client.post("/classes/temp/images", files=_files(images[16], images[17], images[18])).json()["ids"]
        assert client.delete(f"/images/{ids[0]}").status_code == 200
        assert client.get(f"/images/{ids[0]}").status_code == 404
        assert client.delete(f"/images/{ids[0]}").status_code == 404
        counts = {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]}
        assert counts["temp"] == 2
        hits = client.post("/search", params={"k": 1}, files=_files(images[16])).json()["results"][0]["hits"]
        assert hits[0]["id"] != ids[0]
        r = client.delete("/classes/temp")
        assert r.status_code == 200 and r.json()["deleted_images"] == 2
        assert "temp" not in {c["name"] for c in client.get("/classes").json()["classes"]}
        assert client.get(f"/images/{ids[1]}").status_code == 404
        r = client.delete("/classes/temp")
        assert r.status_code == 404 and "temp" in r.json()["detail"]


def _bomb_png(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height zeros: a few kB that decode to width*height bytes."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_bad_input_gets_a_4xx_that_says_what_is_wrong(server, enrolled, drawings):
    images, _ = drawings
    good = png_bytes(images[0])
    cases = [
        ({"files": [("image", ("notes.txt", b"hello, not an image", "text/plain"))]}, 400, "notes.txt: not an image"),
        ({"files": [("image", ("cut.png", good[: len(good) // 2], "image/png"))]}, 400, "cut.png: truncated"),
        ({"files": [("image", ("empty.png", b"", "image/png"))]}, 400, "empty"),
        ({"files": [("image", ("bomb.png", _bomb_png(2000, 1000), "image/png"))]}, 400, "over the limit of 1000000"),
        ({"files": [("image", ("big.png", bytes(1_200_000), "image/png"))]}, 413, "over the limit"),
        ({"files": [("image", ("q.png", good, "image/png"))], "params": {"k": 0}}, 400, "k must be between 1"),
        ({"files": [("image", ("q.png", good, "image/png"))], "params": {"k": 10**9}}, 400, "k must be between 1"),
        ({"files": [("image", ("q.png", good, "image/png"))], "params": {"k": "ten"}}, 422, "k"),
        ({"files": [("image", ("q.png", good, "image/png"))], "params": {"mode": "faces"}}, 400, "mode must be"),
        ({"files": [("other", ("q.png", good, "image/png"))]}, 400, "missing multipart field 'image'"),
        ({}, 400, "missing multipart field 'image'"),
    ]
    with server.client() as client:
        for request, status, words in cases:
            r = client.post("/search", **request)
            assert r.status_code == status, (request.get("params"), r.text)
            assert words in str(r.json()["detail"]), r.text
        # the same checks guard enrolment, and a rejected request enrols nothing
        before = client.get("/health").json()["images"]
        r = client.post(
            "/classes/a/images",
            headers=server.auth(),
            files=[("image", ("ok.png", good, "image/png")), ("image", ("bad.txt", b"nope", "text/plain"))],
        )
        assert r.status_code == 400 and "bad.txt" in r.json()["detail"]
        assert client.get("/health").json()["images"] == before
        r = client.post("/classes/%20/images", headers=server.auth(), files=[("image", ("ok.png", good, "image/png"))])
        assert r.status_code == 400 and "class name" in r.json()["detail"]
        assert client.get("/images/not-a-number").status_code == 422
        assert client.get("/health").status_code == 200  # still serving


def test_serve_refuses_to_start_without_keys(tmp_path, model_files, capsys):
    code = main(["serve", "--index", str(tmp_path / "i"), "--checkpoint", str(model_files["checkpoint"])])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "--api-key-file" in err and "--no-auth" in err
    (tmp_path / "empty-keys").write_text("# nothing\n\n")
    assert (
        main(
            [
                "serve",
                "--index",
                str(tmp_path / "i"),
                "--checkpoint",
                str(model_files["checkpoint"]),
                "--api-key-file",
                str(tmp_path / "empty-keys"),
            ]
        )
        == 2
    )
    assert "holds no key" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path / "i"), "--no-auth"]) == 2
    assert "exactly one model" in capsys.readouterr().err
