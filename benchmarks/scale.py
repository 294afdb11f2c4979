"""Index backends and embedding runners at scale: one run, side by side, ratios to the built-in torch index.

Run: ``python benchmarks/scale.py --sizes 10000,100000 [--backends ...] [--kinds image,centroid]
[--queries 1000] [--embed-images 240] [--plot docs/images/scale_search.png] [--json out.json]``.

For each gallery size N (``--dim``-d vectors, default 512; 10 images per class around random class centres,
like embeddings) and each backend, per-image and centroid (N/10 classes):

* ``add_s``: adding the N vectors (for IVF-PQ and HNSW including training / graph building, for centroids
  the running means and the first build), ending with one search so that nothing is left lazy;
* ``p50_ms``: median latency of a one-query search (k=10) over 50 queries;
* ``qps``: throughput of one batched search of ``--queries`` queries (k=10);
* ``rss_mb``: growth of this process's resident memory while the index was built (allocator-dependent:
  an indication, not an exact size); ``disk_mb``: size of the saved index (Qdrant: its local folder);
* ``recall10``: recall@10 against the exact torch search on 100 queries (approximate backends).

Sizes over a backend's ``--max`` (``backend=N``) are not run and are printed with the reason. Qdrant is run in
local mode (``path=``: pure Python, brute force), which is far slower than a Qdrant server: its figures say
how the embedded mode behaves, not how a server does. Then the embedding throughput (images/s) of the
single-process path against Ray Data with 1 and 2 actors, on ``--embed-images`` small PNGs and the seeded
small CNN (``--skip-ray`` to leave it out). One faiss/torch thread: on shared cores two OpenMP threads wait
on each other. The plot: p50 search latency against gallery size per backend (per-image), log-log.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import pathlib
import platform
import shutil
import tempfile
import time

import numpy as np
import torch

from centrum.retrieval.backends import open_backend
from centrum.retrieval.backends.qdrant_backend import close_local

ALL_BACKENDS = ("torch", "faiss-flat", "faiss-ivfpq", "faiss-hnsw", "qdrant")
# largest N run by default, and why not more (2 shared CPU cores; Qdrant local mode is pure Python)
DEFAULT_MAX = {"torch": 10**6, "faiss-flat": 10**6, "faiss-ivfpq": 10**6, "faiss-hnsw": 10**5, "qdrant": 10**4}
WHY_NOT = {
    "faiss-hnsw": "graph build is O(N log N): 82 s at 1e5 here, so 15+ min at 1e6 on 2 shared cores (run it with "
    "--max faiss-hnsw=1e6 on a machine of your own)",
    "qdrant": "local mode is pure Python (a sqlite row and a Python payload check per point): use a Qdrant server "
    "beyond ~1e4-1e5 points",
}


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: pathlib.Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def make_gallery(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N vectors (10 per class around random centres), their labels, and class centres."""
    rng = np.random.default_rng(seed)
    classes = max(1, n // 10)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    labels = np.repeat(np.arange(classes), 10)[:n]
    x = centres[labels] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels, centres


def brute_force_ids(x: np.ndarray, labels: np.ndarray, queries: np.ndarray, kind: str) -> np.ndarray:
    """Exact cosine top-10 ids (image index) or labels (centroid index) when torch is not in the run."""
    if kind == "centroid":
        sums = np.zeros((labels.max() + 1, x.shape[1]), np.float64)
        np.add.at(sums, labels, x / np.linalg.norm(x, axis=1, keepdims=True))
        x = sums.astype(np.float32)
    gallery = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ gallery.T), axis=1)[:, :10]


def backend_options(name: str, n: int) -> dict:
    """Benchmark settings: IVF-PQ with sqrt(N) cells (trained on 20k vectors), HNSW with M=16."""
    if name == "faiss-ivfpq":
        return {"nlist": max(16, int(np.sqrt(n))), "nprobe": 16, "train_size": 20_000}
    if name == "faiss-hnsw":
        return {"hnsw_m": 16, "ef_construction": 40, "ef_search": 64}
    return {}


def measure(name: str, kind: str, x, labels, queries, exact_ids, workdir: pathlib.Path) -> dict:
    n, dim = x.shape
    options = backend_options(name, n)
    folder = workdir / f"{name}-{kind}-{n}"
    if name == "qdrant":
        options["path"] = folder
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    index = open_backend(name, dim, kind=kind, **options)
    step = 100_000
    for lo in range(0, n, step):
        if kind == "image":
            index.add(x[lo : lo + step], labels[lo : lo + step], cameras=np.zeros(min(step, n - lo), np.int64))
        else:
            index.add(x[lo : lo + step], labels[lo : lo + step])
    index.search(queries[:1], 10)
    add_s = time.perf_counter() - start
    grown = rss_mb() - before
    latencies = []
    for q in queries[:50]:
        t = time.perf_counter()
        index.search(q[None], 10)
        latencies.append(time.perf_counter() - t)
    t = time.perf_counter()
    hits = index.search(queries, 10)
    qps = len(queries) / (time.perf_counter() - t)
    recall = None  # exact reference itself
    if exact_ids is not None:
        got = hits.ids[: len(exact_ids)]
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact_ids, strict=True)]))
    if name == "qdrant":
        index.close()
        close_local(folder)
    else:
        index.save(folder)
    disk = folder_mb(folder)
    shutil.rmtree(folder, ignore_errors=True)
    del index
    gc.collect()
    return {
        "add_s": add_s,
        "p50_ms": 1000 * float(np.median(latencies)),
        "qps": qps,
        "rss_mb": grown,
        "disk_mb": disk,
        "recall10": recall,
        "ids": hits.ids[:100],
    }


def index_benchmark(args) -> list[dict]:
    rows = []
    limits = {**DEFAULT_MAX, **dict(_parse_max(m) for m in args.max)}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="centrum-scale-"))
    try:
        for n in args.sizes:
            x, labels, centres = make_gallery(n, args.dim)
            rng = np.random.default_rng(1)
            q_labels = rng.integers(0, centres.shape[0], args.queries)
            queries = centres[q_labels] + 0.5 * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
            for kind in args.kinds:
                exact_ids = None if "torch" in args.backends else brute_force_ids(x, labels, queries[:100], kind)
                for name in args.backends:
                    if n > limits[name]:
                        reason = WHY_NOT.get(name, f"above --max {name}={limits[name]}")
                        rows.append({"n": n, "kind": kind, "backend": name, "skipped": reason})
                        print(f"N={n:>8} {kind:8} {name:12} not run: {reason}", flush=True)
                        continue
                    result = measure(name, kind, x, labels, queries, exact_ids if name != "torch" else None, workdir)
                    if name == "torch":
                        exact_ids = result["ids"]
                    result.pop("ids")
                    rows.append({"n": n, "kind": kind, "backend": name, **result})
                    print(
                        f"N={n:>8} {kind:8} {name:12} add {result['add_s']:8.2f} s  p50 {result['p50_ms']:9.3f} ms  "
                        f"{result['qps']:10.1f} q/s  rss +{result['rss_mb']:7.1f} MB  disk {result['disk_mb']:7.1f} MB"
                        f"  recall@10 {'exact' if result['recall10'] is None else format(result['recall10'], '.3f')}",
                        flush=True,
                    )
            del x, labels, centres
            gc.collect()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def _parse_max(spec: str) -> tuple[str, int]:
    name, value = spec.split("=")
    if name not in ALL_BACKENDS:
        raise SystemExit(f"--max: unknown backend {name!r}")
    return name, int(float(value))


def print_table(rows: list[dict]) -> None:
    """Every measured figure with its ratio to the torch index of the same size and kind."""
    ref = {(r["n"], r["kind"]): r for r in rows if r["backend"] == "torch" and "skipped" not in r}
    print(
        "\n| N | kind | backend | add s (x torch) | p50 ms (x torch) | q/s (x torch) | RSS MB | disk MB | recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['n']:,} | {r['kind']} | {r['backend']} | not run: {r['skipped']} |||||")
            continue
        t = ref.get((r["n"], r["kind"]))

        def ratio(key, r=r, t=t):
            return f" ({r[key] / t[key]:.2f}x)" if t else ""

        recall = "exact" if r.get("recall10") is None else f"{r['recall10']:.3f}"
        print(
            f"| {r['n']:,} | {r['kind']} | {r['backend']} | {r['add_s']:.2f}{ratio('add_s')} | "
            f"{r['p50_ms']:.3f}{ratio('p50_ms')} | {r['qps']:.0f}{ratio('qps')} | {r['rss_mb']:.0f} | "
            f"{r['disk_mb']:.1f} | {recall} |"
        )


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from centrum.io import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind in zip(axes, ("image", "centroid"), strict=True):
        for name in ALL_BACKENDS:
            pts = sorted(
                (r["n"], r["p50_ms"]) for r in rows if r["backend"] == name and r["kind"] == kind and "skipped" not in r
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entries added (images; centroid index: N/10 classes)")
        ax.set_ylabel("one-query search latency, p50 (ms)")
        ax.set_title(f"{kind} index: search time vs gallery size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("centrum index backends, 512-d, k=10, one CPU thread (benchmarks/scale.py)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    print(f"plot: {path}")


def write_images(folder: pathlib.Path, count: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def embedding_benchmark(args) -> list[dict]:
    """Images/s of the single-process shards against Ray Data with 1 and 2 actors (same model, same shards)."""
    from centrum.inference.shards import ShardInputs, embed_all, load_manifest, seeded_small_cnn_embedder

    rows = []
    with tempfile.TemporaryDirectory(prefix="centrum-embed-") as tmp:
        root = pathlib.Path(tmp)
        (root / "images").mkdir()
        inputs = ShardInputs.of(write_images(root / "images", args.embed_images))
        make = functools.partial(seeded_small_cnn_embedder, seed=0)
        t = time.perf_counter()
        embed_all(inputs, root / "single", 4, make(), batch_size=32)
        single = time.perf_counter() - t
        rows.append({"runner": "single process", "images": args.embed_images, "seconds": single})
        reference = load_manifest(root / "single").embeddings
        try:
            import ray

            from centrum.inference.ray_runner import embed_with_ray
        except ImportError:
            print("Ray not installed: pip install 'ray[data]'")
            return rows
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                t = time.perf_counter()
                embed_with_ray(inputs, root / f"ray{workers}", 4, make, num_workers=workers, batch_size=32)
                seconds = time.perf_counter() - t
                diff = float(np.abs(load_manifest(root / f"ray{workers}").embeddings - reference).max())
                rows.append(
                    {
                        "runner": f"Ray Data, {workers} actor(s)",
                        "images": args.embed_images,
                        "seconds": seconds,
                        "max_diff": diff,
                    }
                )
        finally:
            ray.shutdown()
    print("\n| runner | images | seconds | images/s | x single | max |diff| vs single |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        rate = r["images"] / r["seconds"]
        print(
            f"| {r['runner']} | {r['images']} | {r['seconds']:.2f} | {rate:.1f} | "
            f"{single / r['seconds']:.2f} | {r.get('max_diff', 0.0):.1e} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated gallery sizes")
    parser.add_argument("--backends", default=",".join(ALL_BACKENDS))
    parser.add_argument("--kinds", default="image,centroid")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--max", action="append", default=[], help="backend=N: largest size to run it at")
    parser.add_argument("--embed-images", type=int, default=240)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--plot", default="docs/images/scale_search.png")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--merge-json", default=None, help="add the index rows of an earlier --json run")
    args = parser.parse_args()
    args.sizes = [int(float(s)) for s in args.sizes.split(",")]
    args.backends = args.backends.split(",")
    args.kinds = args.kinds.split(",")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    rows = [] if args.skip_index else index_benchmark(args)
    if args.merge_json:
        earlier = json.loads(pathlib.Path(args.merge_json).read_text())["index"]
        fresh = {(r["n"], r["kind"], r["backend"]) for r in rows}
        earlier = [r for r in earlier if (r["n"], r["kind"], r["backend"]) not in fresh]
        rows = sorted(earlier + rows, key=lambda r: (r["kind"], r["n"], ALL_BACKENDS.index(r["backend"])))
    if rows:
        print_table(rows)
        if args.plot:
            plot(rows, args.plot)
    embed_rows = [] if args.skip_ray else embedding_benchmark(args)
    if args.json:
        from centrum.io import atomic_write_json

        atomic_write_json(args.json, {"index": rows, "embedding": embed_rows})


if __name__ == "__main__":
    main()
