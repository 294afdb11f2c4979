"""Throughput of the re-id training data pipeline next to a ResNet-50 forward+backward, on this machine.

The pipeline is what training runs: JPEG decode (PIL), the "reid" training transform at 256 x 128 (resize,
flip, pad 10 + random crop, normalise, random erasing), collation into P x M = 16 x 4 batches by
``PKSampler`` through a DataLoader with 2 workers. The source images are synthetic JPEGs of Market-1501's
native size (64 x 128), written to a temporary folder. The model is ``build_model("resnet50",
num_classes=751, last_stride=1)`` (the CTL model) in training mode, forward + cross-entropy + backward.

    python benchmarks/data.py                      # CPU model, as on a machine without a GPU
    python benchmarks/data.py --device cuda        # model on the GPU (the pipeline always runs on CPU workers)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from centrum.data import ImageDataset, PKSampler, SampleList, build_transform, collate_skip_none


def write_images(folder: Path, n: int, size: tuple[int, int], ids: int) -> SampleList:
    """``n`` JPEGs (quality 90, like the published crops) of ``size`` = (width, height), ``ids`` identities."""
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    paths, labels, cameras = [], [], []
    for i in range(n):
        person = i % ids
        base = np.stack([(x * 3 + person) % 256, (y * 2 + person * 7) % 256, (x + y + i) % 256], axis=2)
        noisy = np.clip(base + rng.normal(0, 20, size=base.shape), 0, 255).astype(np.uint8)
        camera = 1 + i % 6
        path = folder / f"{person:04d}_c{camera}s1_{i:06d}_01.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(str(path))
        labels.append(person)
        cameras.append(camera)
    return SampleList(paths, np.array(labels), np.array(cameras))


def pipeline_throughput(samples: SampleList, workers: int, batches: int, p: int, m: int) -> float:
    """Images per second out of the DataLoader, after the workers have started and delivered a few batches."""
    dataset = ImageDataset(samples, build_transform("reid", train=True, size=(256, 128)), on_error="skip")
    sampler = PKSampler(samples.labels, p=p, m=m, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_none,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    warmup = 3  # batches delivered before timing starts: worker start-up is not throughput
    seen, count, start = 0, 0, time.perf_counter()
    while True:  # epochs, until enough batches are timed
        for batch in loader:
            seen += 1
            if seen == warmup:
                start = time.perf_counter()
            elif seen > warmup:
                count += len(batch[0])
                if seen - warmup >= batches:
                    return count / (time.perf_counter() - start)


def model_throughput(device: str, batch: int, steps: int) -> float:
    """Images per second of a ResNet-50 (CTL model) forward + cross-entropy + backward at 256 x 128."""
    from centrum.models import build_model

    model = build_model("resnet50", num_classes=751, last_stride=1).to(device).train()
    images = torch.randn(batch, 3, 256, 128, device=device)
    labels = torch.randint(0, 751, (batch,), device=device)

    def step() -> None:
        out = model(images)
        loss = torch.nn.functional.cross_entropy(out["logits"], labels) + out["raw"].pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, cudnn autotuning
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device of the ResNet-50 (cpu or cuda)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the pipeline")
    parser.add_argument("--images", type=int, default=1536, help="synthetic source images")
    parser.add_argument("--source-size", default="64x128", help="source JPEG size WIDTHxHEIGHT (Market: 64x128)")
    parser.add_argument("--batches", type=int, default=40, help="timed pipeline batches of 16 x 4")
    parser.add_argument("--model-batch", type=int, default=None, help="ResNet-50 batch (default 64 GPU, 8 CPU)")
    parser.add_argument("--model-steps", type=int, default=None, help="timed ResNet-50 steps (default 20 GPU, 2 CPU)")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    model_batch = args.model_batch or (64 if gpu else 8)
    model_steps = args.model_steps or (20 if gpu else 2)
    width, height = (int(v) for v in args.source_size.lower().split("x"))

    gpu_name = f", GPU {torch.cuda.get_device_name()}" if gpu else ""
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads{gpu_name}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_images(Path(tmp), args.images, (width, height), ids=args.images // 8)
        pipeline = pipeline_throughput(samples, args.workers, args.batches, p=16, m=4)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a DataLoader worker; intra-op threads only contend on small images
        in_process = pipeline_throughput(samples, 0, args.batches // 2, p=16, m=4)
        torch.set_num_threads(threads)
    model = model_throughput(args.device, model_batch, model_steps)
    print(f"{'what':<64}{'images/s':>10}")
    print(f"{'data pipeline: decode ' + args.source_size + ' JPEG + reid augment 256x128 + collate,':<64}")
    print(f"{f'  {args.workers} DataLoader workers, PKSampler 16 x 4':<64}{pipeline:>10.1f}")
    print(f"{'  same, in the main process (no workers: the cost of one core)':<64}{in_process:>10.1f}")
    print(f"{f'ResNet-50 (CTL model) forward+backward 256x128, batch {model_batch}, {args.device}':<64}{model:>10.1f}")
    ratio = pipeline / model
    verdict = "OK: the pipeline keeps up" if ratio >= 3 else "TOO SLOW: the pipeline would starve the model"
    print(f"pipeline / model = {ratio:.1f}x (target >= 3x) -> {verdict}")


if __name__ == "__main__":
    main()
