"""The Lightning module that trains an embedding model with a recipe's objective."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from centrum import __version__
from centrum.inference import Preprocess
from centrum.models import build_model
from centrum.training.config import (
    CTLObjectiveConfig,
    ExperimentConfig,
    MetricObjectiveConfig,
    config_from_dict,
)
from centrum.training.objectives import CTLObjective, MetricObjective
from centrum.training.schedule import warmup_multistep_factor

CHECKPOINT_FORMAT = "centrum-checkpoint-v1"


def build_objective(config: CTLObjectiveConfig | MetricObjectiveConfig, num_classes: int, feat_dim: int) -> nn.Module:
    """The objective a config section describes (its fields are the constructor's arguments)."""
    kwargs = {k: v for k, v in vars(config).items() if k != "kind"}
    if isinstance(config, CTLObjectiveConfig):
        return CTLObjective(num_classes=num_classes, feat_dim=feat_dim, **kwargs)
    return MetricObjective(**kwargs)


def build_model_from_config(config: ExperimentConfig, num_classes: int, pretrained: bool = True) -> nn.Module:
    """The :class:`centrum.models.EmbeddingModel` of ``config.model``; a classifier only for the CTL recipe.

    ``pretrained=False`` skips the weights named in the config (used when a checkpoint follows).
    """
    model_kwargs = dict(vars(config.model))
    if not pretrained:
        model_kwargs["pretrained"] = None
    uses_classifier = isinstance(config.objective, CTLObjectiveConfig)
    return build_model(num_classes=num_classes if uses_classifier else None, **model_kwargs)


class RetrievalModule(L.LightningModule):
    """Trains :class:`centrum.models.EmbeddingModel` with the CTL or the metric-learning objective.

    Optimisation is manual because the CTL recipe updates two things on every batch: Adam (warm-up +
    step decay, per epoch) updates the model, and plain SGD (lr ``optimizer.center_lr``) updates the
    center loss's centers, with their gradients divided by the center-loss weight first so that their
    step does not depend on it (the strong baseline's convention). The center step is applied here
    rather than through a second Lightning optimiser so that one batch is one ``global_step``.
    """

    def __init__(self, config: ExperimentConfig | dict, num_classes: int, pretrained: bool = True) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = config_from_dict(config)
        self.config = config
        self.num_classes = num_classes
        self.save_hyperparameters({"config": config.to_dict(), "num_classes": num_classes})
        self.model = build_model_from_config(config, num_classes, pretrained)
        self.objective = build_objective(config.objective, num_classes, self.model.feature_dim)
        self.automatic_optimization = False
        # per-epoch sums of each logged term, weighted by batch size: kept here (and in the checkpoint) rather
        # than in Lightning's epoch accumulators, which a checkpoint does not hold, so that a run resumed
        # mid-epoch reports the epoch's mean over all its batches
        self.epoch_sums: dict[str, float] = {}
        self.epoch_images = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Inference features (not normalised) of a batch of images."""
        return self.model.embed(images)

    def _center_parameters(self) -> list[nn.Parameter]:
        center = getattr(self.objective, "center_loss", None)
        return list(center.parameters()) if center is not None else []

    @torch.no_grad()
    def _center_sgd_step(self) -> None:
        """``centers -= center_lr * grad / center_weight``, the gradient unscaled first under fp16 AMP."""
        weight = getattr(self.objective, "center_weight", 0.0)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        loss_scale = float(scaler.get_scale()) if scaler is not None else 1.0
        for p in self._center_parameters():
            if p.grad is None or weight <= 0:
                continue
            grad = p.grad / (weight * loss_scale)
            if torch.isfinite(grad).all():  # an overflowing AMP step is skipped, as GradScaler would
                p.add_(grad, alpha=-self.config.optimizer.center_lr)
            p.grad = None

    def _optimizer_list(self) -> list:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def configure_optimizers(self) -> Any:
        """Adam on the model (and any learnable loss parameters but the centers), with the per-epoch schedule."""
        opt_cfg = self.config.optimizer
        center_ids = {id(p) for p in self._center_parameters()}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in center_ids]
        adam = torch.optim.Adam(main, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            adam,
            lambda epoch: warmup_multistep_factor(
                epoch, opt_cfg.warmup_epochs, opt_cfg.warmup_factor, opt_cfg.milestones, opt_cfg.gamma
            ),
        )
        return [adam], [{"scheduler": schedule, "interval": "epoch"}]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        """One P x M batch: objective, backward, the centers' SGD step, Adam's step, and each term logged."""
        if batch is None:  # every image of the batch was unreadable and skipped
            return None
        images, labels, _, _ = batch
        outputs = self.model(images)
        terms = self.objective(outputs, labels)
        (adam,) = self._optimizer_list()
        adam.zero_grad()
        for p in self._center_parameters():
            p.grad = None
        self.manual_backward(terms["loss"])
        self._center_sgd_step()  # before Adam's step, which may update the AMP loss scale
        adam.step()
        batch_size = labels.shape[0]
        for name, value in terms.items():
            value = value.detach()
            self.log(
                f"train/{name}_step",
                value,
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
                prog_bar=name in ("loss", "synthetic_ratio"),
            )
            self.epoch_sums[name] = self.epoch_sums.get(name, 0.0) + float(value) * batch_size
        self.epoch_images += batch_size
        return terms["loss"].detach()

    def on_train_epoch_end(self) -> None:
        """Log each term's mean over the epoch's images, advance the learning-rate schedule, log the rate."""
        for name, total in self.epoch_sums.items():
            self.log(f"train/{name}_epoch", total / max(self.epoch_images, 1), on_step=False, on_epoch=True)
        self.epoch_sums, self.epoch_images = {}, 0  # the epoch-end checkpoint starts the next epoch afresh
        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            sched.step()
        self.log("train/lr", self._optimizer_list()[0].param_groups[0]["lr"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stamp the checkpoint so that loading can tell a centrum checkpoint from anything else."""
        checkpoint["centrum"] = {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "config": self.config.to_dict(),
            "num_classes": self.num_classes,
            # the test-time transform as plain data, so that inference and export need no config to embed
            "preprocess": Preprocess.from_config(self.config.to_dict()).to_dict(),
        }
        checkpoint["centrum_epoch_sums"] = {"sums": dict(self.epoch_sums), "images": self.epoch_images}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the epoch's running sums of a run interrupted mid-epoch."""
        state = checkpoint.get("centrum_epoch_sums")
        if state is not None:
            self.epoch_sums = {k: float(v) for k, v in state["sums"].items()}
            self.epoch_images = int(state["images"])
