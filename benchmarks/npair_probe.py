"""Why did N-pair's Recall@1 fall with longer training? A small CPU reproduction of the GPU study's N-pair arm.

Trains ``configs/omniglot_triplet_symm.yaml`` with the GPU study's overrides (EfficientNet-Lite0 ImageNet-pretrained,
128-d embedding, P=32 x M=2, Adam 3e-4, no decay; Symm off) at a smaller input size, once per loss arm, and after
every epoch records, on the unseen test characters and on the training characters:

- Recall@1 by cosine (the evaluation's metric) and by raw inner product (the N-pair loss's own similarity);
- the mean L2 norm of the embeddings;
- on the training batches of the epoch: the mean loss, split into the softmax part and the L2 penalty
  (``loss - NPairLoss(l2_reg=0)`` on the same embeddings), and the mean embedding norm.

The loss arms (``--arms``): ``npair`` (centrum's default: inner products, ``l2_reg=0.002`` with TensorFlow's
factor 1/4), ``npair_norm`` (``normalize=True, l2_reg=0``: pytorch-metric-learning's default ``NPairsLoss``,
cosine logits at temperature 1, equal to it as ``tests/losses/test_npair_reference.py`` checks), and
``npair_l2=<value>`` (inner products with a larger penalty), ``npair_xavier`` (the default loss, the
embedding head re-initialised Glorot-uniform as TF-slim's ``fully_connected``), ``npair_wd=<value>`` (the
default loss with Adam's L2 weight decay, as the Symm authors' ``train.py`` adds ``5e-3 * sum(w^2) / 2`` to the
loss), ``triplet`` (the study's other arm, for scale).

    OMP_NUM_THREADS=1 python benchmarks/npair_probe.py --root ../shared/data/omniglot --out runs/npair-probe \
        --epochs 8 --image-size 32 --arms npair npair_norm npair_l2=0.05

Writes ``<out>/<arm>/`` (an ordinary run folder) and ``<out>/probe.json`` (every arm's per-epoch records), and
prints one line per epoch and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from centrum.inference.embeddings import embed_samples
from centrum.losses import NPairLoss
from centrum.rng import preserved_rng
from centrum.training.config import load_config
from centrum.training.run import build_datamodule, train

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "omniglot_triplet_symm.yaml"


def arm_overrides(arm: str) -> list[str]:
    """The ``--set`` overrides of one loss arm."""
    if arm == "npair":
        return ["objective.loss=npair", "objective.loss_options={}"]
    if arm == "npair_norm":
        return ["objective.loss=npair", "objective.loss_options={normalize: true, l2_reg: 0.0}"]
    if arm.startswith("npair_l2="):
        return ["objective.loss=npair", f"objective.loss_options={{l2_reg: {float(arm.split('=', 1)[1])}}}"]
    if arm.startswith("npair_wd="):  # Symm's train.py adds 5e-3 * sum(w^2)/2 to the loss: Adam's coupled L2
        return [
            "objective.loss=npair",
            "objective.loss_options={}",
            f"optimizer.weight_decay={float(arm.split('=', 1)[1])}",
        ]
    if arm == "npair_xavier":  # the default loss; the probe re-initialises the head (see NPairProbe.on_fit_start)
        return ["objective.loss=npair", "objective.loss_options={}"]
    if arm == "triplet":
        return ["objective.loss=triplet", "objective.loss_options={margin: 0.2, mining: hard}"]
    raise SystemExit(
        f"npair_probe: unknown arm {arm!r}; "
        "choose npair, npair_norm, npair_l2=<v>, npair_wd=<v>, npair_xavier or triplet"
    )


def study_overrides(image_size: int, epochs: int, seed: int, backbone: str, pretrained: str | None) -> list[str]:
    """The GPU study's overrides (issue 17), scaled to ``image_size`` and ``epochs``; evaluation by the probe."""
    return [
        f"seed={seed}",
        f"model.backbone={backbone}",
        f"model.pretrained={pretrained if pretrained else 'null'}",
        "model.last_stride=2",
        "model.embedding_dim=128",
        f"data.image_size=[{image_size}, {image_size}]",
        f"data.transform_options={{scale: [0.8, 1.0], resize: {image_size}}}",
        "data.p=32",
        "data.m=2",
        "data.test_batch_size=512",
        "data.num_workers=0",
        "objective.symm=false",
        "optimizer.lr=0.0003",
        "optimizer.milestones=[]",
        "optimizer.gamma=1.0",
        f"trainer.max_epochs={epochs}",
        "trainer.eval_every=0",  # the probe evaluates every epoch itself (both metrics, norms)
        "trainer.checkpoint_every_n_steps=100000",
        "trainer.log_every_n_steps=5",
    ]


def recall_at_1(emb: torch.Tensor, labels: torch.Tensor, metric: str) -> float:
    """Leave-one-out Recall@1 of ``emb`` under ``metric`` (``cosine`` or ``dot``: larger is nearer)."""
    x = torch.nn.functional.normalize(emb, dim=1) if metric == "cosine" else emb
    sim = x @ x.T
    sim.fill_diagonal_(float("-inf"))
    return (labels[sim.argmax(1)] == labels).double().mean().item()


class NPairProbe(L.Callback):
    """Per epoch: loss parts and norms on the training batches, Recall@1 and norms on train and test sets."""

    def __init__(self, datamodule, arm: str) -> None:
        self.dm = datamodule
        self.arm = arm
        self.records: list[dict] = []
        self._hook = None
        self._sums: dict[str, float] = {}
        self._batches = 0
        self._t0 = time.perf_counter()

    def _pre_objective(self, module, args) -> None:
        outputs, labels = args[0], args[1]
        raw = outputs["raw"].detach()
        with torch.no_grad():
            loss = module.loss(raw, labels)
            ce = NPairLoss(l2_reg=0.0)(raw, labels)  # the softmax part alone, on inner products
        for name, value in (("loss", loss), ("npair_ce_raw", ce), ("norm", raw.norm(dim=1).mean())):
            self._sums[name] = self._sums.get(name, 0.0) + float(value)
        self._batches += 1

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.arm == "npair_xavier":
            # Glorot-uniform, TF-slim fully_connected's default (the Symm authors' head), instead of centrum's
            # Kaiming fan-out: about 3x smaller initial embeddings at 1280 -> 128
            torch.nn.init.xavier_uniform_(pl_module.model.embedding.weight)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sums, self._batches = {}, 0
        if self._hook is None:
            self._hook = pl_module.objective.register_forward_pre_hook(self._pre_objective)

    def _embed(self, model, samples) -> tuple[torch.Tensor, torch.Tensor]:
        emb = embed_samples(model, samples, self.dm.eval_dataloader(samples), "cpu", normalize=False)
        return torch.from_numpy(emb.embeddings).double(), torch.from_numpy(np.asarray(emb.labels))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with preserved_rng():
            test, test_y = self._embed(pl_module.model, self.dm.splits.query)
            tr, tr_y = self._embed(pl_module.model, self.dm.splits.train)
        n = max(self._batches, 1)
        rec = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": self._sums.get("loss", 0.0) / n,
            "train_ce_dot": self._sums.get("npair_ce_raw", 0.0) / n,
            "train_batch_norm": self._sums.get("norm", 0.0) / n,
            "test_R1_cos": recall_at_1(test, test_y, "cosine"),
            "test_R1_dot": recall_at_1(test, test_y, "dot"),
            "train_R1_cos": recall_at_1(tr, tr_y, "cosine"),
            "test_norm": test.norm(dim=1).mean().item(),
            "test_norm_cv": (test.norm(dim=1).std() / test.norm(dim=1).mean()).item(),
            "train_norm": tr.norm(dim=1).mean().item(),
            "seconds": time.perf_counter() - self._t0,
        }
        self.records.append(rec)
        print(
            f"[{self.arm}] epoch {rec['epoch']}: loss {rec['train_loss']:.3f} (CE on dot {rec['train_ce_dot']:.3f})"
            f" batch norm {rec['train_batch_norm']:.2f} | test R@1 cos {rec['test_R1_cos']:.4f}"
            f" dot {rec['test_R1_dot']:.4f}, norm {rec['test_norm']:.2f} (cv {rec['test_norm_cv']:.2f})"
            f" | train R@1 cos {rec['train_R1_cos']:.4f} | {rec['seconds']:.0f} s",
            flush=True,
        )


def run_arm(args: argparse.Namespace, arm: str) -> list[dict]:
    """Train one arm into ``<out>/<arm>`` and return its per-epoch records."""
    overrides = [
        f"data.root={args.root}",
        *study_overrides(args.image_size, args.epochs, args.seed, args.backbone, args.pretrained),
        *arm_overrides(arm),
    ]
    config = load_config(BASE_CONFIG, overrides)
    dm = build_datamodule(config)
    probe = NPairProbe(dm, arm)
    run_dir = Path(args.out) / arm.replace("=", "_")
    train(config, run_dir, callbacks=[probe], progress="none")
    return probe.records


def table(results: dict[str, list[dict]]) -> str:
    """A Markdown table: one row per arm and epoch."""
    lines = [
        "| arm | epoch | train loss | CE part (dot) | test R@1 cosine | test R@1 dot | train R@1 cosine "
        "| test mean norm | norm CV |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, recs in results.items():
        for r in recs:
            lines.append(
                f"| {arm} | {r['epoch']} | {r['train_loss']:.3f} | {r['train_ce_dot']:.3f} | {r['test_R1_cos']:.4f} "
                f"| {r['test_R1_dot']:.4f} | {r['train_R1_cos']:.4f} | {r['test_norm']:.2f} | {r['test_norm_cv']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: train each arm, print the per-epoch lines and a table, write ``probe.json``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/omniglot", help="the Omniglot folder")
    p.add_argument("--out", default="runs/npair-probe", help="where the runs and probe.json go")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--pretrained", default="imagenet", help="'imagenet' or '' for random initialisation")
    p.add_argument("--arms", nargs="+", default=["npair", "npair_norm", "npair_l2=0.05"])
    args = p.parse_args(argv)
    for arm in args.arms:
        arm_overrides(arm)  # a bad arm stops before any training
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for arm in args.arms:
        results[arm] = run_arm(args, arm)
        (out / "probe.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
