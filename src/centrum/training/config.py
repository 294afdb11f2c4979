"""Typed experiment configs: one dataclass per constructor, loaded from YAML, overridable field by field.

A config file has the sections ``data``, ``model``, ``objective``, ``optimizer``, ``trainer`` and
``evaluation``; each section's fields are exactly the keyword arguments of the thing it builds
(:class:`~centrum.training.datamodule.RetrievalDataModule`, :func:`centrum.models.build_model`, the
objective, the optimiser and schedule, the Lightning trainer, the evaluation). Overrides use dotted
paths: ``data.p=8 trainer.max_epochs=2 objective.symm=true``. An unknown field is an error that
suggests the nearest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


@dataclass
class DataConfig:
    """Arguments of :class:`~centrum.training.datamodule.RetrievalDataModule`: which dataset, how batches are drawn.

    ``dataset``/``root``/``options`` go to :func:`centrum.data.build_dataset`; ``p`` x ``m`` is the P x M
    batch (P classes, M images each); ``recipe`` picks the augmentation (``"reid"`` or ``"dml"``).
    """

    dataset: str = "fashion-mnist"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    recipe: Literal["reid", "dml"] = "reid"
    image_size: tuple[int, int] = (256, 128)
    transform_options: dict[str, Any] = field(default_factory=dict)
    p: int = 16
    m: int = 4
    test_batch_size: int = 128
    num_workers: int = 2
    on_error: Literal["raise", "skip"] = "raise"
    cache: str = "none"  # "memory" | "device": decode the training images once (centrum.data.cache)


@dataclass
class ModelConfig:
    """Arguments of :func:`centrum.models.build_model`: backbone, pooling, embedding layer and BNNeck."""

    backbone: str = "resnet50"
    pretrained: str | None = None
    last_stride: int | None = None  # None: the family's published value (1 for the re-id ResNets, else 2)
    pooling: Literal["avg", "gem"] = "avg"
    embedding_dim: int | None = None
    bnneck: bool = True


@dataclass
class CTLObjectiveConfig:
    """Arguments of :class:`~centrum.training.objectives.CTLObjective` (methods.md 1.2).

    ``centroid_weight=0`` gives the BNNeck baseline without the centroid term.
    """

    kind: Literal["ctl"] = "ctl"
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    center_weight: float = 5e-4
    centroid_weight: float = 1.0
    centroid_margin: float = 0.5  # the authors' margin (methods.md 1.1); the paper gives none
    centroid_variant: Literal["paper", "official"] = "paper"
    # multi-GPU/multi-node: batch-hard triplet and centroid triplet on every rank's batch (GatherAcrossRanks)
    gather_across_ranks: bool = False


@dataclass
class MetricObjectiveConfig:
    """Arguments of :class:`~centrum.training.objectives.MetricObjective` (methods.md 2.4): one pair-based
    loss from :data:`centrum.losses.LOSSES`, optionally wrapped by Symmetrical Synthesis."""

    kind: Literal["metric"] = "metric"
    loss: str = "triplet"
    loss_options: dict[str, Any] = field(default_factory=dict)
    symm: bool = False
    symm_options: dict[str, Any] = field(default_factory=dict)
    # multi-GPU/multi-node: the loss (with Symm) mines over every rank's batch (GatherAcrossRanks)
    gather_across_ranks: bool = False


@dataclass
class OptimizerConfig:
    """Adam with linear warm-up and step decay (the CTL recipe); ``center_lr`` is the center loss's own SGD."""

    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = 0.1
    center_lr: float = 0.5


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainerConfig:
    """Arguments of the Lightning ``Trainer`` that a user changes, plus how often to evaluate and checkpoint."""

    max_epochs: int = 120
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    eval_every: int = 10
    checkpoint_every_n_steps: int = 50
    log_every_n_steps: int = 10
    limit_train_batches: int | float | None = None
    #: ``torch.compile`` the model and the objective (the objective as one graph): "off", or a compile mode,
    #: "default", "reduce-overhead" (CUDA graphs: P x M batches have static shapes), "max-autotune",
    #: "max-autotune-no-cudagraphs"
    compile: str = "off"
    #: channels-last memory format for the CNN backbones: true, false, or "auto" (on CUDA and the CPU, where it
    #: speeds convolutions up: :func:`centrum.models.prefers_channels_last`)
    channels_last: bool | str = "auto"
    #: images of the training split embedded once per epoch to watch for collapse
    #: (:class:`~centrum.training.collapse.EmbeddingSpreadMonitor`'s ``num_images``); 0 turns the check off
    spread_check_images: int = 128


@dataclass
class EvaluationConfig:
    """Which protocols to report (default: the dataset's own, per-image and centroids) and how.

    ``recall_ks`` sets the K of Recall@K for the ``dml`` protocol (default 1, 2, 4, 8; SOP uses 1, 10, 100, 1000).
    ``distractor_labels``: gallery labels that stay singletons in the ``reid-centroids`` protocol instead of
    being averaged into one centroid (Market-1501: ``[0]``, its distractor images of many people).
    """

    protocols: tuple[str, ...] = ()
    metric: Literal["euclidean", "cosine"] = "cosine"
    recall_ks: tuple[int, ...] = ()
    distractor_labels: tuple[int, ...] = ()


@dataclass
class ExperimentConfig:
    """A whole experiment: a name, a seed and one config per part. Maps one-to-one onto the YAML file."""

    name: str = "experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: CTLObjectiveConfig | MetricObjectiveConfig = field(default_factory=CTLObjectiveConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-serialisable data (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """The config as a YAML document that :func:`load_config` reads back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


OBJECTIVE_KINDS: dict[str, type] = {"ctl": CTLObjectiveConfig, "metric": MetricObjectiveConfig}


class _YAML12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` and ``5E-4`` are numbers (YAML 1.1, which PyYAML
    follows, wants a dot, ``1.0e-3``, and reads ``1e-3`` as the string "1e-3")."""


_YAML12Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YAML12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML safely, reading ``1e-3``-style numbers as floats (YAML 1.2), as config files expect."""
    return yaml.load(text, Loader=_YAML12Loader)


def _check(condition: bool, field_name: str, requirement: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"{field_name} must be {requirement}, got {value!r}")


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_ranges(config: ExperimentConfig) -> ExperimentConfig:
    """Check that every numeric field is in its meaningful range; raise a ``ValueError`` naming the field."""
    d, o, t = config.data, config.optimizer, config.trainer
    _check(d.p >= 1, "data.p", ">= 1 (classes per batch)", d.p)
    _check(d.m >= 1, "data.m", ">= 1 (images per class in a batch)", d.m)
    _check(d.test_batch_size >= 1, "data.test_batch_size", ">= 1", d.test_batch_size)
    _check(d.num_workers >= 0, "data.num_workers", ">= 0", d.num_workers)
    _check(d.cache in ("none", "memory", "device"), "data.cache", "one of none, memory, device", d.cache)
    _check(len(d.image_size) == 2 and min(d.image_size) >= 1, "data.image_size", "two sizes >= 1", d.image_size)
    _check(_finite_number(o.lr) and o.lr > 0, "optimizer.lr", "a number > 0", o.lr)
    _check(_finite_number(o.weight_decay) and o.weight_decay >= 0, "optimizer.weight_decay", ">= 0", o.weight_decay)
    _check(o.warmup_epochs >= 0, "optimizer.warmup_epochs", ">= 0", o.warmup_epochs)
    _check(0 < o.warmup_factor <= 1, "optimizer.warmup_factor", "in (0, 1]", o.warmup_factor)
    _check(0 < o.gamma <= 1, "optimizer.gamma", "in (0, 1] (the factor of each step decay)", o.gamma)
    _check(all(m >= 0 for m in o.milestones), "optimizer.milestones", "epochs >= 0", list(o.milestones))
    _check(_finite_number(o.center_lr) and o.center_lr >= 0, "optimizer.center_lr", ">= 0", o.center_lr)
    _check(t.max_epochs >= 1, "trainer.max_epochs", ">= 1", t.max_epochs)
    _check(t.num_nodes >= 1, "trainer.num_nodes", ">= 1 (machines of the DDP job)", t.num_nodes)
    precisions = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", "64")
    _check(t.precision in precisions, "trainer.precision", f"one of {', '.join(precisions)}", t.precision)
    _check(t.compile in COMPILE_MODES, "trainer.compile", f"one of {', '.join(COMPILE_MODES)}", t.compile)
    _check(t.channels_last in ("auto", True, False), "trainer.channels_last", "true, false or auto", t.channels_last)
    _check(
        t.spread_check_images == 0 or t.spread_check_images >= 2,
        "trainer.spread_check_images",
        "0 (off) or >= 2 (the spread is over pairs)",
        t.spread_check_images,
    )
    _check(t.eval_every >= 0, "trainer.eval_every", ">= 0 (0: only after the last epoch)", t.eval_every)
    _check(
        t.checkpoint_every_n_steps >= 0,
        "trainer.checkpoint_every_n_steps",
        ">= 0 (0: at epoch ends only)",
        t.checkpoint_every_n_steps,
    )
    _check(t.log_every_n_steps >= 1, "trainer.log_every_n_steps", ">= 1", t.log_every_n_steps)
    if t.limit_train_batches is not None:
        _check(t.limit_train_batches > 0, "trainer.limit_train_batches", "> 0", t.limit_train_batches)
    obj = config.objective
    if isinstance(obj, CTLObjectiveConfig):
        _check(0 <= obj.label_smoothing < 1, "objective.label_smoothing", "in [0, 1)", obj.label_smoothing)
        for name in ("triplet_margin", "centroid_margin", "center_weight", "centroid_weight"):
            value = getattr(obj, name)
            _check(_finite_number(value) and value >= 0, f"objective.{name}", ">= 0", value)
    else:
        margin = obj.loss_options.get("margin")
        if margin is not None:
            _check(_finite_number(margin) and margin >= 0, "objective.loss_options.margin", "a number >= 0", margin)
    ks = config.evaluation.recall_ks
    _check(all(k >= 1 for k in ks), "evaluation.recall_ks", "integers >= 1", list(ks))
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} Valid fields: {', '.join(valid)}"


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value to the field's declared type, or raise a ValueError naming the field."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (types.UnionType, Union):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{where}: cannot read {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping of fields, got {values!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown field {where}.{key}{_suggest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from nested plain data, checking every field name and type."""
    if not isinstance(data, dict):
        raise ValueError(f"a config must be a mapping of sections, got {type(data).__name__}")
    sections = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in sections:
            raise ValueError(f"unknown config section {key!r}{_suggest(key, list(sections))}")
        if key == "objective":
            value = value or {}
            kind = value.get("kind", "ctl")
            if kind not in OBJECTIVE_KINDS:
                raise ValueError(f"objective.kind must be one of {', '.join(OBJECTIVE_KINDS)}, got {kind!r}")
            kwargs[key] = _build_section(OBJECTIVE_KINDS[kind], value, "objective")
        elif key in ("name", "seed"):
            kwargs[key] = _coerce(value, str if key == "name" else int, key)
        else:
            section_type = get_type_hints(ExperimentConfig)[key]
            kwargs[key] = _build_section(section_type, value or {}, key)
    return check_ranges(ExperimentConfig(**kwargs))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides (values parsed as YAML) to nested config data, in place.

    ``data.options.max_per_class=20`` reaches into a mapping field. Field names are checked later by
    :func:`config_from_dict`, which suggests the nearest name for a typo.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value (e.g. trainer.max_epochs=2)")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        try:
            value = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"override {item!r}: the value is not valid YAML ({first})") from exc
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {key!r} is not a section")
        node[keys[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config, apply command-line overrides, and validate it.

    An empty file (or one of comments only) is an error: training the defaults it would silently mean is
    never what was asked.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path} is not a text (UTF-8) file: {exc.reason} at byte {exc.start}") from exc
    if data is None:
        raise ValueError(
            f"config file {path} is empty (no sections): start from a shipped one, e.g. configs/fashion_mnist_ctl.yaml"
        )
    apply_overrides(data, list(overrides or []))
    try:
        return config_from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
