"""A trained model back from a ``centrum train`` checkpoint, loaded safely and without Lightning.

Checkpoints are read with :func:`centrum.io.safe_torch_load` (``weights_only=True``): a file that would run
code when unpickled is refused. Everything needed to rebuild the model and its test-time transform is plain
data in ``checkpoint["centrum"]``: the experiment config as a dict, the number of training classes, and,
when the writer stored it, ``preprocess`` (:meth:`Preprocess.to_dict`); without it the test transform is
rebuilt from the config's ``data`` section, as for every checkpoint ``centrum train`` writes today.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from centrum.data import IMAGENET_MEAN, IMAGENET_STD, build_transform
from centrum.distances import METRICS
from centrum.io import safe_torch_load
from centrum.models import build_model, lay_out

CHECKPOINT_FORMAT = "centrum-checkpoint-v1"
_STATE_PREFIX = "model."  # the embedding model's weights inside the training module's state dict


#: version of :meth:`Preprocess.to_dict`'s layout; a reader refuses a newer one rather than misread it
PREPROCESS_VERSION = 1
RECIPES = ("reid", "dml")
FEATURES = ("bn", "raw")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input and its output the embedding: all a service or an exported
    model needs, as plain data (stored in checkpoints and in exported ONNX/TorchScript files).

    ``recipe`` is the test transform family ("reid": resize to ``input_size``; "dml": resize the shorter side
    to ``resize`` and centre-crop ``input_size``, or resize to a square first with ``square_resize``);
    ``input_size`` is (height, width); ``mean``/``std`` normalise RGB values in [0, 1]; ``feature`` is the
    model output used as the embedding ("bn": after the BNNeck, "raw": the pooled or projected feature);
    ``normalize``: embeddings are L2-normalised; ``metric``: the distance the model was evaluated with
    (one of :data:`centrum.distances.METRICS`), which an index over its embeddings should use.
    """

    recipe: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = tuple(IMAGENET_MEAN)
    std: tuple[float, float, float] = tuple(IMAGENET_STD)
    resize: int | None = None
    square_resize: bool = False
    interpolation: str = "bilinear"
    feature: str = "bn"
    normalize: bool = True
    metric: str = "cosine"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "preprocess") -> Preprocess:
        """The preprocessing stored as plain data by :meth:`to_dict` (e.g. under ``checkpoint["centrum"]``).

        Raises a one-line ``ValueError`` naming ``source`` (the file it came from) for a field that is
        unknown, missing, malformed, or a layout ``version`` newer than this centrum reads.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: preprocessing must be a JSON object, got {type(data).__name__}")
        values = dict(data)
        version = values.pop("version", PREPROCESS_VERSION)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        try:
            if not isinstance(version, int) or version > PREPROCESS_VERSION:
                raise ValueError(f"version {version!r} is not one this centrum reads (<= {PREPROCESS_VERSION})")
            if unknown:
                raise ValueError(f"unknown field(s) {unknown}; expected some of {sorted(known | {'version'})}")
            for key in ("recipe", "input_size"):
                if key not in values:
                    raise ValueError(f"field {key!r} is missing")
            size = values["input_size"]
            if not isinstance(size, list | tuple) or len(size) != 2 or not all(int(v) > 0 for v in size):
                raise ValueError(f"input_size must be [height, width], got {size!r}")
            values["input_size"] = (int(size[0]), int(size[1]))
            for key in ("mean", "std"):
                if key in values:
                    if not isinstance(values[key], list | tuple) or len(values[key]) != 3:
                        raise ValueError(f"{key} must be 3 numbers (R, G, B), got {values[key]!r}")
                    values[key] = tuple(float(v) for v in values[key])
            for key, allowed in (("recipe", RECIPES), ("feature", FEATURES), ("metric", METRICS)):
                if key in values and values[key] not in allowed:
                    raise ValueError(f"{key} {values[key]!r} is not one of {list(allowed)}")
            if values.get("resize") is not None:
                values["resize"] = int(values["resize"])
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source} holds no valid centrum preprocessing: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "model file") -> Preprocess:
        """Read :meth:`to_json`'s output; anything else is a one-line ``ValueError`` naming ``source``."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source} holds no valid centrum preprocessing: not JSON ({exc})") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Preprocess:
        """The test-time preprocessing described by an experiment config (as a dict)."""
        data, model = config.get("data", {}), config.get("model", {})
        recipe = data.get("recipe", "reid")
        size = data.get("image_size") or ((256, 128) if recipe == "reid" else (227, 227))
        options = dict(data.get("transform_options") or {})
        transform = build_transform(recipe, train=False, size=tuple(size), **options)
        return cls(
            recipe=recipe,
            input_size=tuple(int(s) for s in transform.size),
            mean=tuple(float(v) for v in options.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in options.get("std", IMAGENET_STD)),
            resize=getattr(transform, "resize", None),
            square_resize=bool(getattr(transform, "square_resize", False)),
            interpolation=str(options.get("interpolation", "bilinear")),
            feature="bn" if model.get("bnneck", True) else "raw",
            metric=str((config.get("evaluation") or {}).get("metric", "cosine")),
        )

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The test-time transform: RGB ``PIL.Image`` -> normalised C x H x W float tensor."""
        options: dict[str, Any] = {"mean": self.mean, "std": self.std, "interpolation": self.interpolation}
        if self.recipe == "dml":
            options.update(resize=self.resize, square_resize=self.square_resize)
        return build_transform(self.recipe, train=False, size=self.input_size, **options)

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """A ``N x 3 x H x W`` float32 array of ``images`` (converted to RGB) after the test transform: the
        input of an embedder's ``embed_batch``."""
        height, width = self.input_size
        if len(images) == 0:
            return np.zeros((0, 3, height, width), np.float32)
        transform = self.transform()
        return np.stack([transform(im.convert("RGB")).numpy() for im in images]).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings), with the layout ``version``, for JSON or a checkpoint."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["version"] = PREPROCESS_VERSION
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as one JSON object (stored in exported ONNX and TorchScript files)."""
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class TrainedModel:
    """A trained embedding model in eval mode, with the experiment config (a plain dict) it was trained with."""

    model: nn.Module
    config: dict[str, Any]
    num_classes: int
    path: Path
    preprocess: Preprocess


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means CUDA when a GPU is visible, else the CPU.

    Raises ``ValueError`` for a device that is not understood or a CUDA device when none is visible.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {str(device)!r} is not understood: use cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r} asked for, but no CUDA device is visible: use cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r} asked for, but only {count} CUDA device(s) are visible")
    elif resolved.type not in ("cpu", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported: use cpu, cuda or cuda:N")
    return resolved


def build_model_from_config(config: dict[str, Any], num_classes: int) -> nn.Module:
    """The untrained :class:`~centrum.models.EmbeddingModel` an experiment config (a dict) describes, without
    pretrained weights (a checkpoint's weights follow); a classifier only for the CTL recipe."""
    model_kwargs = dict(config.get("model", {}))
    model_kwargs["pretrained"] = None
    uses_classifier = config.get("objective", {}).get("kind") == "ctl"
    return build_model(num_classes=num_classes if uses_classifier else None, **model_kwargs)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The contents of a ``centrum train`` checkpoint, read safely; ``ValueError`` for any other file."""
    path = Path(path)
    checkpoint = safe_torch_load(path, map_location=map_location, what="checkpoint")
    stamp = checkpoint.get("centrum") if isinstance(checkpoint, dict) else None
    if not isinstance(stamp, dict) or stamp.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a centrum checkpoint (no '{CHECKPOINT_FORMAT}' stamp); it must be a model.ckpt "
            "written by `centrum train` (bare backbone weights load through the config's model.pretrained)"
        )
    if not isinstance(stamp.get("config"), dict) or "num_classes" not in stamp:
        raise ValueError(f"checkpoint {path} is damaged: its centrum stamp lacks the config or num_classes")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device | None = "cpu") -> TrainedModel:
    """Rebuild the embedding model of a checkpoint written by ``centrum train`` and load its weights exactly.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a centrum
    checkpoint, holds code, or whose weights do not fit the model its config describes (the message counts
    the missing, unexpected and mismatched keys). The training objective's own parameters (e.g. the center
    loss's centers) are not needed for inference and are ignored. The model is laid out as
    ``trainer.channels_last: auto`` lays it out for training (:func:`centrum.models.lay_out`).
    """
    path = Path(path)
    target = resolve_device(device)
    checkpoint = read_checkpoint(path, map_location="cpu")
    stamp = checkpoint["centrum"]
    config = stamp["config"]
    num_classes = int(stamp["num_classes"])
    try:
        model = build_model_from_config(config, num_classes)
        # a stored preprocessing (plain data) wins; checkpoints without one rebuild it from their config
        stored = stamp.get("preprocess")
        if isinstance(stored, dict):
            # checkpoints written before the metric was part of the preprocessing: the config's evaluation metric
            metric = str((config.get("evaluation") or {}).get("metric", "cosine"))
            preprocess = Preprocess.from_dict({"metric": metric, **stored}, f"checkpoint {path}")
        else:
            preprocess = Preprocess.from_config(config)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"checkpoint {path} has a config this centrum cannot build: {exc}") from exc
    full = checkpoint.get("state_dict", {})
    state = {k[len(_STATE_PREFIX) :]: v for k, v in full.items() if k.startswith(_STATE_PREFIX)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint {path} does not fit the model its config describes: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} mismatched keys "
            f"(first: {(missing + unexpected + mismatched)[:3]})"
        )
    model.load_state_dict(state)
    model = model.to(target).eval()
    lay_out(model, target)  # the layout training used: the same embeddings bit for bit
    return TrainedModel(model=model, config=config, num_classes=num_classes, path=path, preprocess=preprocess)
