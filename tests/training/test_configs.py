"""Every shipped config in ``configs/*.yaml`` builds and takes a training step on a tiny fixture of its dataset.

Each config is loaded with overrides that point ``data.root`` at a fixture in the dataset's published layout
(``tests/dataset_layouts.py``), never download weights (``model.pretrained=null``) and shrink the P x M batch
to 4 x 2; then the data module, the Lightning module and one real batch of the training pipeline go through
forward, objective and backward. A new config is covered automatically; one naming a dataset without a
fixture here fails, asking for one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from centrum.evaluation.protocols import PROTOCOLS
from centrum.inference import DEFAULT_PROTOCOLS
from centrum.training import load_config
from centrum.training.config import CTLObjectiveConfig
from centrum.training.module import RetrievalModule
from centrum.training.run import build_datamodule
from dataset_layouts import (
    make_c2s,
    make_cars,
    make_cub,
    make_dukemtmc,
    make_fashion_mnist,
    make_market,
    make_omniglot,
    make_sop,
    make_street2shop,
)

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
P, M = 4, 2  # what every fixture below supports: at least 4 training classes of 2+ images
EXTRA = 4  # extra training classes added to each fixture (see dataset_layouts)
# dataset -> (fixture builder taking the folder, training classes the fixture gives)
FIXTURES: dict[str, tuple[Callable[[Path], Path], int]] = {
    "market1501": (lambda root: make_market(root, extra_train_classes=EXTRA), 2 + EXTRA),
    "dukemtmc": (lambda root: make_dukemtmc(root, extra_train_classes=EXTRA), 2 + EXTRA),
    "deepfashion-c2s": (lambda root: make_c2s(root, extra_train_classes=EXTRA), 1 + EXTRA),
    "street2shop": (lambda root: make_street2shop(root, extra_train_classes=EXTRA), 2 + EXTRA),
    "cub200": (lambda root: make_cub(root, extra_train_classes=EXTRA), 3 + EXTRA),
    "cars196": (lambda root: make_cars(root, extra_train_classes=EXTRA), 2 + EXTRA),
    "sop": (lambda root: make_sop(root, extra_train_classes=EXTRA), 2 + EXTRA),
    "omniglot": (lambda root: make_omniglot(root, extra_train_classes=EXTRA), 3 + EXTRA),  # root: the zips
    "fashion-mnist": (make_fashion_mnist, 5),  # root: the IDX files; the configs train on 5 of the 10 classes
}
# datasets with published numbers (shared/reference/results.md): evaluated by their own protocol only
PUBLISHED = {"market1501", "dukemtmc", "deepfashion-c2s", "street2shop", "cub200", "cars196", "sop"}
PUBLISHED_RECALL_KS = {"cub200": (1, 2, 4, 8), "cars196": (1, 2, 4, 8), "sop": (1, 10, 100, 1000)}
# Inputs larger than GoogLeNet's 227 x 227 are halved per side for speed: on 2 CPU cores a batch of 8 takes
# ~1.7 s forward + 3-8 s backward for ResNet50-IBN-a at 320 x 320, 0.4 s + 0.8 s at 160 x 160. The sizes of
# ResNet-50 at 256 x 128 (0.5 s forward) and GoogLeNet at 227 x 227 (0.35 s) are kept.
MAX_PIXELS = 227 * 227

pytestmark = pytest.mark.filterwarnings("ignore:street2shop.*not in:UserWarning")  # the fixture's photo 99


def test_configs_are_found() -> None:
    assert len(CONFIGS) >= 40, [p.name for p in CONFIGS]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``dataset_root(name)``: the folder of the dataset's fixture, written once per module."""
    roots: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in roots:
            assert name in FIXTURES, f"no fixture for dataset {name!r}: add one to dataset_layouts and FIXTURES"
            roots[name] = FIXTURES[name][0](tmp_path_factory.mktemp(name))
        return roots[name]

    return get


def _overrides(image_size: tuple[int, int], root: Path) -> list[str]:
    """Fixture root, no pretrained weights, a 4 x 2 batch in the main process, a smaller image if slow."""
    overrides = [f"data.root={root}", "model.pretrained=null", f"data.p={P}", f"data.m={M}", "data.num_workers=0"]
    height, width = image_size
    if height * width > MAX_PIXELS:
        overrides.append(f"data.image_size=[{height // 2}, {width // 2}]")
    return overrides


def _check_protocols(config, protocol: str) -> None:
    own = DEFAULT_PROTOCOLS[protocol]
    chosen = config.evaluation.protocols or own
    assert set(chosen) <= set(PROTOCOLS), f"unknown protocol(s) {set(chosen) - set(PROTOCOLS)}"
    assert set(chosen) & set(own), f"{chosen} leaves out the {protocol!r} dataset's own protocols {own}"
    if config.data.dataset in PUBLISHED:
        assert set(chosen) <= set(own), f"{chosen}: a {protocol!r} dataset with published numbers takes only {own}"
        if config.data.dataset in PUBLISHED_RECALL_KS:
            assert config.evaluation.recall_ks == PUBLISHED_RECALL_KS[config.data.dataset]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_one_batch(path: Path, dataset_root: Callable[[str], Path]) -> None:
    as_shipped = load_config(path)
    name = as_shipped.data.dataset
    config = load_config(path, _overrides(as_shipped.data.image_size, dataset_root(name)))
    assert config.model.pretrained is None and (config.data.p, config.data.m) == (P, M)

    datamodule = build_datamodule(config)
    splits = datamodule.splits
    assert datamodule.num_classes == FIXTURES[name][1]
    assert len(splits.query) > 0 and len(splits.gallery) > 0
    _check_protocols(config, splits.protocol)
    height, width = config.data.image_size
    assert datamodule.test_transform()(splits.query.load(0)).shape == (3, height, width)

    module = RetrievalModule(config, num_classes=datamodule.num_classes, pretrained=False)
    assert datamodule.trainer is None  # the loader is built exactly as training builds it, minus DDP ranks
    images, labels, _, _ = next(iter(datamodule.train_dataloader()))
    assert images.shape == (P * M, 3, height, width)
    assert np.unique(labels.numpy(), return_counts=True)[1].tolist() == [M] * P  # P classes x M images

    module.train()
    outputs = module.model(images)
    assert (outputs.get("logits") is not None) == isinstance(config.objective, CTLObjectiveConfig)
    terms = module.objective(outputs, labels)
    assert all(math.isfinite(float(value.detach())) for value in terms.values()), terms
    terms["loss"].backward()
    first_conv = next(m for m in module.model.backbone.modules() if isinstance(m, nn.Conv2d))
    grad = first_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    if float(terms["loss"].detach()) > 0:  # a hinge loss may be exactly 0 on a batch, with zero gradients
        assert grad.abs().sum() > 0
