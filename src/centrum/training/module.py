"""The Lightning module that trains an embedding model with a recipe's objective."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from centrum import __version__
from centrum.inference import Preprocess
from centrum.models import build_model, lay_out
from centrum.training.config import (
    CTLObjectiveConfig,
    ExperimentConfig,
    MetricObjectiveConfig,
    config_from_dict,
)
from centrum.training.objectives import CTLObjective, MetricObjective
from centrum.training.schedule import warmup_multistep_factor
from centrum.validation import check_class_blocks, check_embeddings_labels, trusted_inputs

CHECKPOINT_FORMAT = "centrum-checkpoint-v1"


def build_objective(
    config: CTLObjectiveConfig | MetricObjectiveConfig,
    num_classes: int,
    feat_dim: int,
    batch_layout: tuple[int, int] | None = None,
) -> nn.Module:
    """The objective a config section describes (its fields are the constructor's arguments); ``batch_layout``:
    the P x M sampler's ``(data.p, data.m)``, so that its losses never read the class layout off the labels."""
    kwargs = {k: v for k, v in vars(config).items() if k != "kind"}
    if isinstance(config, CTLObjectiveConfig):
        return CTLObjective(num_classes=num_classes, feat_dim=feat_dim, batch_layout=batch_layout, **kwargs)
    return MetricObjective(batch_layout=batch_layout, **kwargs)


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

    A steady-state step never waits on the device: the objective knows the P x M layout, its value checks run
    once per batch shape (:meth:`_check_batch`) and are skipped after that (:func:`~centrum.validation.
    trusted_inputs`), Adam is the fused implementation (with fp16 the loss scaler hands it the overflow flag
    instead of reading it), the centers' step and the overflow count are tensor arithmetic, and the logged terms
    stay on the device until Lightning writes them, once per ``trainer.log_every_n_steps``.
    ``trainer.compile`` compiles the model and the objective (one graph), ``trainer.channels_last`` lays the
    images and the backbone out channels-last.
    """

    def __init__(self, config: ExperimentConfig | dict, num_classes: int, pretrained: bool = True) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = config_from_dict(config)
        self.config = config
        self.num_classes = num_classes
        self.save_hyperparameters({"config": config.to_dict(), "num_classes": num_classes})
        self.model = build_model_from_config(config, num_classes, pretrained)
        self.objective = build_objective(
            config.objective, num_classes, self.model.feature_dim, (config.data.p, config.data.m)
        )
        self.automatic_optimization = False
        self._step_model: Any = self.model  # torch.compile'd in on_fit_start when trainer.compile asks for it
        self._step_objective: Any = self.objective
        self._channels_last = False
        self._checked_shapes: set[tuple[int, ...]] = set()
        self._skipped_steps: torch.Tensor | None = None
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

    def _loss_scaler(self) -> Any:
        """The fp16 loss scaler of Lightning's precision plugin (``None`` without fp16 mixed precision)."""
        return getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None

    @torch.no_grad()
    def _center_sgd_step(self) -> None:
        """``centers -= center_lr * grad / center_weight``, the gradient unscaled first under fp16 AMP, and no step
        where it is not finite (an overflowing fp16 step is skipped, as the scaler skips Adam's): tensor
        arithmetic, so the host does not wait for the verdict."""
        weight = getattr(self.objective, "center_weight", 0.0)
        scaler = self._loss_scaler()
        scale = getattr(scaler, "_scale", None) if scaler is not None else None  # a device tensor, read by no one
        for p in self._center_parameters():
            if p.grad is None or weight <= 0:
                continue
            grad = p.grad / weight if scale is None else p.grad / (scale.to(p.grad.dtype) * weight)
            step = torch.where(torch.isfinite(grad).all(), grad, torch.zeros_like(grad))
            p.sub_(step, alpha=self.config.optimizer.center_lr)
            p.grad = None

    def on_fit_start(self) -> None:
        """Once on the device: channels-last for the backbone, and the compiled model and objective."""
        tcfg = self.config.trainer
        setting = None if tcfg.channels_last == "auto" else tcfg.channels_last
        self._channels_last = lay_out(self.model, self.device, setting)
        if tcfg.compile != "off":
            mode = None if tcfg.compile == "default" else tcfg.compile
            self._step_model = torch.compile(self.model, mode=mode)
            self._step_objective = torch.compile(self.objective, mode=mode, fullgraph=True)

    def _check_batch(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """The value checks of the objective's inputs, once per batch shape (they wait on the device): finite
        embeddings and labels in the P x M layout the objective was told (a sampler that broke it would make every
        later step silently wrong)."""
        key = (*outputs["raw"].shape, labels.shape[0])
        if key in self._checked_shapes:
            return
        check_embeddings_labels(outputs["raw"].detach(), labels)
        layout = getattr(self.objective, "batch_layout", None)
        if layout is not None and labels.shape[0] == layout[0] * layout[1]:
            check_class_blocks(labels, layout[1])
        self._checked_shapes.add(key)

    def _optimizer_list(self) -> list:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def configure_optimizers(self) -> Any:
        """Adam on the model (and any learnable loss parameters but the centers), with the per-epoch schedule."""
        opt_cfg = self.config.optimizer
        center_ids = {id(p) for p in self._center_parameters()}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in center_ids]
        # fused: one kernel for the whole update, and it takes fp16's overflow flag from the scaler as a tensor
        # (the unfused Adam under GradScaler makes the host read it every step)
        adam = torch.optim.Adam(main, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay, fused=True)
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
        if self._channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = self._step_model(images)
        self._check_batch(outputs, labels)
        with trusted_inputs():
            terms = self._step_objective(outputs, labels)
        (adam,) = self._optimizer_list()
        adam.zero_grad()
        for p in self._center_parameters():
            p.grad = None
        self.manual_backward(terms["loss"])
        backward_statistics = getattr(self.objective, "backward_statistics", None)
        if backward_statistics is not None:  # what the gradient showed (Symm: the active negatives)
            terms.update(backward_statistics())
        self._center_sgd_step()  # before Adam's step, which may update the AMP loss scale
        scaler = self._loss_scaler()
        scale_before = scaler._scale.clone() if scaler is not None and scaler._scale is not None else None
        adam.step()
        if scale_before is not None:  # the scaler lowers its scale exactly when it skips an overflowing step
            skipped = (scaler._scale < scale_before).to(torch.float32)
            self._skipped_steps = skipped if self._skipped_steps is None else self._skipped_steps + skipped
            terms["skipped_steps"] = self._skipped_steps
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
            if name != "skipped_steps":  # a running count, not a per-batch term
                # summed on the device: converted to numbers at the epoch's end and at checkpoints only
                self.epoch_sums[name] = self.epoch_sums.get(name, 0.0) + value.float() * batch_size
        self.epoch_images += batch_size
        return terms["loss"].detach()

    def on_train_epoch_end(self) -> None:
        """Log each term's mean over the epoch's images, advance the learning-rate schedule, log the rate."""
        for name, total in self.epoch_sums.items():
            self.log(f"train/{name}_epoch", float(total) / max(self.epoch_images, 1), on_step=False, on_epoch=True)
        if self._skipped_steps is not None:
            self.log("train/skipped_steps_epoch", float(self._skipped_steps), on_step=False, on_epoch=True)
        self.epoch_sums, self.epoch_images = {}, 0  # the epoch-end checkpoint starts the next epoch afresh
        # the rate this epoch trained with (train/lr below is the next epoch's, logged after the step)
        self.log("train/lr_epoch", self._optimizer_list()[0].param_groups[0]["lr"], on_step=False, on_epoch=True)
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
        checkpoint["centrum_epoch_sums"] = {
            "sums": {name: float(total) for name, total in self.epoch_sums.items()},
            "images": self.epoch_images,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the epoch's running sums of a run interrupted mid-epoch."""
        state = checkpoint.get("centrum_epoch_sums")
        if state is not None:
            self.epoch_sums = {k: float(v) for k, v in state["sums"].items()}
            self.epoch_images = int(state["images"])
