"""What the service needs of a model: an :class:`Embedder` (images in, embeddings out) and its :class:`Preprocessing`.

The service, the exporter and the benchmarks only see this protocol, so that a PyTorch checkpoint, an ONNX file
or a TorchScript file serve alike. The preprocessing is plain data (JSON), stored inside exported files so that
the file alone can embed an image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

#: the test-time transform options that change what an image becomes (the rest only apply to training)
TEST_TRANSFORM_OPTIONS = ("resize", "square_resize", "mean", "std", "interpolation")
PREPROCESSING_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input, and what the model's output is.

    ``recipe`` and ``image_size`` (height, width) pick the test transform of :mod:`centrum.data.transforms`
    (``"reid"``: resize; ``"dml"``: resize the shorter side + centre crop), ``transform_options`` its
    resize/mean/std/interpolation. ``feature`` names the model output used as the embedding (``"bn"``: the
    BNNeck feature, ``"raw"``: the pooled or embedding-layer feature); ``l2_normalized`` says the embedding is
    divided by its L2 norm; ``metric`` is the distance the model was evaluated with.
    """

    recipe: str
    image_size: tuple[int, int]
    transform_options: dict[str, Any] = field(default_factory=dict)
    feature: str = "bn"
    l2_normalized: bool = True
    metric: str = "cosine"
    version: int = PREPROCESSING_VERSION

    def to_json(self) -> str:
        """This preprocessing as one JSON object (stored in exported model files)."""
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model file") -> Preprocessing:
        """Read :meth:`to_json`'s output; a missing or malformed field is a ``ValueError`` naming ``source``."""
        try:
            data = json.loads(text)
            size = data["image_size"]
            if len(size) != 2:
                raise ValueError(f"image_size must be [height, width], got {size}")
            version = int(data.get("version", PREPROCESSING_VERSION))
            if version > PREPROCESSING_VERSION:
                raise ValueError(f"preprocessing version {version} is newer than this centrum reads")
            return cls(
                recipe=str(data["recipe"]),
                image_size=(int(size[0]), int(size[1])),
                transform_options=dict(data.get("transform_options", {})),
                feature=str(data.get("feature", "bn")),
                l2_normalized=bool(data.get("l2_normalized", True)),
                metric=str(data.get("metric", "cosine")),
                version=version,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source} holds no valid centrum preprocessing metadata: {exc}") from exc

    def transform(self) -> Callable[[Image.Image], Any]:
        """The test-time transform: RGB ``PIL.Image`` -> float32 ``3 x H x W`` tensor."""
        from centrum.data.transforms import build_transform

        return build_transform(self.recipe, train=False, size=self.image_size, **self.transform_options)

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """A ``N x 3 x H x W`` float32 array of ``images`` (converted to RGB) after the test transform."""
        transform = self.transform()
        return np.stack([transform(im.convert("RGB")).numpy() for im in images]).astype(np.float32, copy=False)


def preprocessing_from_config(config: Any) -> Preprocessing:
    """The :class:`Preprocessing` of a model trained with ``config`` (an ``ExperimentConfig``)."""
    options = {k: v for k, v in dict(config.data.transform_options).items() if k in TEST_TRANSFORM_OPTIONS}
    for key in ("mean", "std"):
        if key in options:
            options[key] = [float(v) for v in options[key]]
    return Preprocessing(
        recipe=str(config.data.recipe),
        image_size=(int(config.data.image_size[0]), int(config.data.image_size[1])),
        transform_options=options,
        feature="bn" if config.model.bnneck else "raw",
        l2_normalized=True,
        metric=str(config.evaluation.metric),
    )


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns images into embeddings: PyTorch, ONNX Runtime or TorchScript.

    ``embed_images`` returns an ``N x dim`` float32 array, one row per image, L2-normalised when
    ``preprocess.l2_normalized``; ``name`` says which model it is (shown by ``/health``).
    """

    name: str
    dim: int
    preprocess: Preprocessing

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings of ``images`` (N x dim float32)."""
        ...


def check_batch_output(output: np.ndarray, count: int, dim: int, source: str) -> np.ndarray:
    """``output`` as a C-contiguous float32 ``count x dim`` array, or a ``ValueError`` naming ``source``."""
    array = np.ascontiguousarray(np.asarray(output, dtype=np.float32))
    if array.shape != (count, dim):
        raise ValueError(f"{source} returned embeddings of shape {array.shape}, expected ({count}, {dim})")
    return array
