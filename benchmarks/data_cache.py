"""Time per training epoch with ``data.cache`` none, memory (and device, where a GPU is given) on a shipped config.

For each cache mode: the datamodule and module of the config (``configs/omniglot_triplet_symm.yaml`` by default:
Omniglot, small CNN, 48 x 48, P x M = 16 x 4, triplet + Symm), a Lightning fit of ``--epochs`` epochs of
``--batches`` batches (no evaluation, no checkpoints, no logger), timed per epoch by a callback; the first epoch
is reported apart (warm-up), the others averaged. Also timed: building the loader (for a cache: decoding every
training image once) and a data-only pass (the batches alone, augmented, no model). Ratios are none / cache.

    python benchmarks/data_cache.py                                   # CPU, Omniglot
    python benchmarks/data_cache.py --device cuda --modes none memory device
    python benchmarks/data_cache.py --set model.backbone=efficientnet_lite0 --batches 10
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch

from centrum.training import RetrievalModule, load_config
from centrum.training.run import build_datamodule

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    """Wall time of each training epoch (the device is synchronised at both ends)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._sync(module)
        self.times.append(time.perf_counter() - self._start)


def measure(config, mode: str, epochs: int, batches: int, device: str) -> dict[str, float]:
    """Loader build time, data-only epoch time and trained epoch times for one cache mode."""
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache=mode))
    torch.manual_seed(config.seed)
    datamodule = build_datamodule(config)
    module = RetrievalModule(config, num_classes=datamodule.num_classes)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    start = time.perf_counter()
    # built here on the host; fit builds the loader again from the same cache (moved to the device once)
    loader = datamodule.train_dataloader()
    build = time.perf_counter() - start
    start = time.perf_counter()
    for k, batch in enumerate(loader):
        if k == batches:
            break
        datamodule.on_after_batch_transfer(batch, 0)
    data_only = time.perf_counter() - start
    trainer.fit(module, datamodule=datamodule)
    later = timer.times[1:] or timer.times
    return {"build": build, "data": data_only, "first": timer.times[0], "epoch": sum(later) / len(later)}


def main() -> None:
    """Parse the arguments, time each mode, print a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "omniglot_triplet_symm.yaml"))
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. model.backbone=small_cnn")
    parser.add_argument("--modes", nargs="*", default=["none", "memory"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # the config's data.root is relative to the repository
    config = load_config(args.config, args.set)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{args.device}; {config.name}: {config.model.backbone} {tuple(config.data.image_size)}, "
        f"P x M = {config.data.p} x {config.data.m}, num_workers={config.data.num_workers}, "
        f"{args.batches} batches x {args.epochs} epochs"
    )
    results = {}
    for mode in args.modes:
        results[mode] = r = measure(config, mode, args.epochs, args.batches, args.device)
        print(
            f"  cache={mode:7s} loader build {r['build']:6.2f} s   "
            f"data only {r['data'] / args.batches * 1e3:7.1f} ms/batch   "
            f"first epoch {r['first']:6.2f} s   later epochs {r['epoch']:6.2f} s"
        )
    if "none" in results:
        for mode, r in results.items():
            if mode != "none":
                base = results["none"]
                print(
                    f"  none / {mode}: epoch {base['epoch'] / r['epoch']:.2f}x, "
                    f"data only {base['data'] / r['data']:.2f}x"
                )


if __name__ == "__main__":
    main()
