"""Serving benchmark: bare in-process embed+search vs the HTTP service, and throughput under concurrent clients.

    python benchmarks/serve.py                       # GoogLeNet 512-d at 227 x 227 (the Symm protocol's model)
    python benchmarks/serve.py --backbone resnet50 --size 256x128 --embedding-dim 0   # the CTL model, 2048-d
    python benchmarks/serve.py --quick               # small_cnn 32 x 32, 10,000 entries: a smoke run

One run prints, for PyTorch eager (``--checkpoint``) and ONNX Runtime (``--onnx``) side by side:
- bare: one image embedded and searched (top-10 over the index) in-process, median latency;
- service p50/p95 at 1 client: the same over HTTP (multipart upload to ``POST /search`` on a live ``centrum
  serve`` on 127.0.0.1, httpx), and the ratio to bare (target <= 1.3);
- throughput (images/s) at 1, 4 and 16 concurrent clients (threads, one image per request) and the ratio
  16 / 1 (target >= 2: micro-batching merges concurrent requests into one model call);
- the bare embedding time of one image and of a batch of 16 (target: ONNX Runtime <= PyTorch).
The index holds ``--index-size`` (default 100,000) synthetic L2-normalised entries in 1,000 classes; the model is
randomly initialised (weights do not change the speed). Server and clients share this machine's CPUs.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(path: Path, backbone: str, size: tuple[int, int], embedding_dim: int | None) -> Path:
    """A randomly initialised checkpoint in ``centrum train``'s format."""
    from centrum.training.config import ExperimentConfig, config_from_dict
    from centrum.training.module import RetrievalModule

    data = ExperimentConfig().to_dict()
    data["name"] = "bench"
    recipe = "dml" if size[0] == size[1] else "reid"
    options = {"resize": max(size) + max(size) // 8} if recipe == "dml" else {}
    data["data"].update(recipe=recipe, image_size=list(size), transform_options=options)
    data["model"].update(backbone=backbone, pretrained=None, embedding_dim=embedding_dim, bnneck=embedding_dim is None)
    module = RetrievalModule(config_from_dict(data), num_classes=10, pretrained=False)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def build_index(folder: Path, dim: int, size: int, classes: int = 1000) -> None:
    """``size`` synthetic entries (class centre + noise, L2-normalised) written as a service snapshot."""
    from centrum.serving.store import IndexStore

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    store = IndexStore(folder, dim, compact_every=10**9)
    per_class = size // classes
    for start in range(0, classes, 100):
        for c in range(start, min(classes, start + 100)):
            x = centres[c] + 0.5 * rng.normal(size=(per_class, dim)).astype(np.float32)
            store._add(
                f"class-{c}",
                x / np.linalg.norm(x, axis=1, keepdims=True),
                list(range(store._next_id, store._next_id + per_class)),
                [""] * per_class,
            )
    if store._seq == store._snapshot_seq:  # _add bypasses the journal: write the snapshot explicitly
        store.compact()
    store.close()  # also releases the folder's service lock for the server this benchmark starts next


def query_image() -> bytes:
    """A 320 x 320 JPEG photo-like image (smooth gradients + noise)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:320, 0:320]
    base = np.stack([x * 0.6, y * 0.5, (x + y) * 0.3], -1) + rng.normal(0, 20, (320, 320, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def start_server(index: Path, model_args: list[str], threads: int):
    import httpx

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # src first, then the caller's path (packages carried onto it, e.g. fastapi on a machine without them)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    args = [
        sys.executable,
        "-m",
        "centrum",
        "serve",
        "--index",
        str(index),
        *model_args,
        "--no-auth",
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode()[-2000:])
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def service_latencies(url: str, image: bytes, n: int) -> list[float]:
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(n + 3):
            t = time.perf_counter()
            r = client.post("/search", params={"k": 10}, files=[("image", ("q.jpg", image, "image/jpeg"))])
            r.raise_for_status()
            if i >= 3:  # warm-up requests not counted
                out.append(time.perf_counter() - t)
    return out


def throughput(url: str, image: bytes, clients: int, seconds: float) -> float:
    """Images per second with ``clients`` threads each sending one-image searches back to back."""
    import httpx

    done = [0] * clients
    stop = time.perf_counter() + seconds
    start_gate = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            start_gate.wait()
            while time.perf_counter() < stop:
                client.post("/search", params={"k": 10}, files=[("image", ("q.jpg", image, "image/jpeg"))])
                done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def median_time(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="googlenet")
    parser.add_argument("--size", default="227x227", help="input HxW")
    parser.add_argument("--embedding-dim", type=int, default=512, help="0: no embedding layer (BNNeck feature)")
    parser.add_argument("--index-size", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30, help="sequential requests for the latency figures")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput phase")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="model threads (server)")
    parser.add_argument("--quick", action="store_true", help="small_cnn 32x32, 10,000 entries, short phases")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.size, args.embedding_dim, args.index_size = "small_cnn", "32x32", 0, 10_000
        args.requests, args.seconds = 15, 3.0
    size = tuple(int(v) for v in args.size.lower().split("x"))
    sys.path.insert(0, str(ROOT / "src"))
    import httpx

    from centrum.export import export_checkpoint
    from centrum.inference import OnnxEmbedder, TorchEmbedder
    from centrum.serving.images import decode_image
    from centrum.serving.store import IndexStore

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="centrum-serve-bench-"))
    ckpt = make_checkpoint(work / "model.ckpt", args.backbone, size, args.embedding_dim or None)
    onnx_file = export_checkpoint(ckpt, "onnx", work / "model.onnx")
    image_bytes = query_image()
    embedders = {"PyTorch": TorchEmbedder.from_checkpoint(ckpt), "ONNX Runtime": OnnxEmbedder(onnx_file, args.threads)}
    dim = embedders["PyTorch"].dim
    print(
        f"model {args.backbone} {size[0]}x{size[1]}, {dim}-d; index {args.index_size:,} entries; "
        f"{args.threads} model threads; {os.cpu_count()} CPUs"
    )
    build_index(work / "index", dim, args.index_size)
    # the bare in-process search reads a copy: the folder itself belongs to the service (one per folder)
    shutil.copytree(work / "index", work / "bare-index")
    store = IndexStore(work / "bare-index", dim)
    rows = {}
    for name, embedder in embedders.items():
        image = decode_image(image_bytes, "q.jpg")[0]
        batch16 = [image] * 16

        def bare(embedder=embedder):
            img = decode_image(image_bytes, "q.jpg")[0]
            store.search_images(embedder.embed_images([img]), 10)

        embed1 = median_time(lambda embedder=embedder, image=image: embedder.embed_images([image]), args.requests)
        embed16 = median_time(lambda e=embedder, b=batch16: e.embed_images(b), max(3, args.requests // 5))
        bare_time = median_time(bare, args.requests)
        model_args = ["--checkpoint", str(ckpt)] if name == "PyTorch" else ["--onnx", str(onnx_file)]
        process, url = start_server(work / "index", model_args, args.threads)
        try:
            lat = sorted(service_latencies(url, image_bytes, args.requests))
            p50, p95 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            tput, batch = {}, {}
            for clients in (1, 4, 16):
                before = httpx.get(url + "/health").json()["embedding"]
                tput[clients] = throughput(url, image_bytes, clients, args.seconds)
                after = httpx.get(url + "/health").json()["embedding"]
                batch[clients] = (after["images"] - before["images"]) / max(1, after["calls"] - before["calls"])
            print(
                f"{name}: mean images per model call at 1/4/16 clients: "
                + " / ".join(f"{batch[c]:.1f}" for c in (1, 4, 16)),
                flush=True,
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
        rows[name] = (embed1, embed16, bare_time, p50, p95, tput)
    print()
    print(
        f"{'':14} {'embed 1':>9} {'embed 16':>9} {'bare e+s':>9} {'svc p50':>9} {'svc p95':>9} "
        f"{'p50/bare':>8} {'img/s @1':>9} {'@4':>7} {'@16':>7} {'16/1':>6}"
    )
    for name, (e1, e16, bare_t, p50, p95, tput) in rows.items():
        print(
            f"{name:14} {e1 * 1e3:7.1f}ms {e16 * 1e3:7.1f}ms {bare_t * 1e3:7.1f}ms {p50 * 1e3:7.1f}ms "
            f"{p95 * 1e3:7.1f}ms {p50 / bare_t:8.2f} {tput[1]:9.1f} {tput[4]:7.1f} {tput[16]:7.1f} "
            f"{tput[16] / tput[1]:6.2f}"
        )
    torch_row, onnx_row = rows["PyTorch"], rows["ONNX Runtime"]
    print()
    print(
        f"targets: p50/bare <= 1.3 (PyTorch {torch_row[3] / torch_row[2]:.2f}, ONNX {onnx_row[3] / onnx_row[2]:.2f}); "
        f"throughput 16/1 >= 2 (PyTorch {torch_row[5][16] / torch_row[5][1]:.2f}, "
        f"ONNX {onnx_row[5][16] / onnx_row[5][1]:.2f}); ONNX/PyTorch embed time <= 1 "
        f"(1 image {onnx_row[0] / torch_row[0]:.2f}, 16 images {onnx_row[1] / torch_row[1]:.2f})"
    )


if __name__ == "__main__":
    main()
