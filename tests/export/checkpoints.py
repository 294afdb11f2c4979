"""Test helpers: centrum checkpoints written without training (the format ``centrum train`` writes), and real
images (Omniglot drawings from the shared zips, Fashion-MNIST when the Debian dataset is installed)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from PIL import Image

from centrum.training.config import ExperimentConfig, config_from_dict
from centrum.training.module import RetrievalModule

OMNIGLOT_ZIP = Path("/work/shared/data/omniglot/images_background_small1.zip")
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")


def make_checkpoint(
    path: Path,
    backbone: str = "small_cnn",
    *,
    bnneck: bool = True,
    embedding_dim: int | None = None,
    recipe: str = "dml",
    image_size: tuple[int, int] = (32, 32),
    transform_options: dict | None = None,
    objective: str = "ctl",
    calibration: list[Image.Image] | None = None,
    name: str = "test-model",
) -> Path:
    """Write a centrum checkpoint of a randomly initialised model (seed 0) to ``path``.

    With ``calibration`` images the BatchNorm running statistics are first estimated on them (train-mode
    forward passes), so that the embeddings are as spread out as a trained model's rather than degenerate.
    """
    base = ExperimentConfig().to_dict()
    base["name"] = name
    base["data"].update(recipe=recipe, image_size=list(image_size), transform_options=dict(transform_options or {}))
    base["model"].update(backbone=backbone, pretrained=None, bnneck=bnneck, embedding_dim=embedding_dim)
    if objective != "ctl":
        base["objective"] = {"kind": "metric", "loss": "triplet"}
    config = config_from_dict(base)
    torch.manual_seed(0)
    module = RetrievalModule(config, num_classes=5, pretrained=False)
    if calibration:
        from centrum.inference import Preprocess

        batch = torch.from_numpy(Preprocess.from_config(config.to_dict()).batch(calibration))
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # cumulative average over the calibration passes
        module.model.train()
        with torch.no_grad():
            module.model(batch)
        module.model.eval()
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def omniglot_images(count: int, per_class: int = 4) -> tuple[list[Image.Image], list[int]]:
    """``count`` Omniglot drawings (RGB), ``per_class`` of each character, with their character labels."""
    images, labels = [], []
    with zipfile.ZipFile(OMNIGLOT_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        by_class: dict[str, list[str]] = {}
        for n in names:
            by_class.setdefault(n.rsplit("/", 1)[0], []).append(n)
        for label, members in enumerate(by_class.values()):
            for member in members[:per_class]:
                images.append(Image.open(io.BytesIO(archive.read(member))).convert("RGB"))
                labels.append(label)
                if len(images) == count:
                    return images, labels
    return images, labels


def fashion_mnist_images(count: int) -> tuple[list[Image.Image], list[int]] | None:
    """``count`` Fashion-MNIST query images (RGB) with labels, or None when the dataset is not installed."""
    if not FASHION_MNIST_ROOT.is_dir():
        return None
    from centrum.data.fashion import read_fashion_mnist

    query = read_fashion_mnist(max_query_per_class=count // 5 + 1, max_gallery_per_class=1, max_train_per_class=1).query
    count = min(count, len(query.paths))
    return [query.load(i) for i in range(count)], [int(v) for v in query.labels[:count]]


def omniglot_class_names(count: int) -> list[str]:
    """Readable names of the first ``count`` Omniglot characters (label order of :func:`omniglot_images`)."""
    with zipfile.ZipFile(OMNIGLOT_ZIP) as archive:
        folders = sorted({n.rsplit("/", 1)[0] for n in archive.namelist() if n.endswith(".png")})
    return [f"{f.split('/')[-2].split('_(')[0].lower()}-{f.split('/')[-1].removeprefix('character')}" for f in folders][
        :count
    ]
