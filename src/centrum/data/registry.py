"""The dataset registry: ``build_dataset(name, root, **options)`` reads any supported dataset by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from .custom import read_csv, read_folder
from .dml import read_cars196, read_cub200, read_omniglot, read_sop
from .fashion import read_deepfashion_c2s, read_deepfashion_inshop, read_fashion_mnist, read_street2shop
from .reid import read_dukemtmc, read_market1501
from .samples import DatasetSplits

__all__ = ["DATASETS", "build_dataset"]

#: Reader of every supported dataset, by name; each is ``reader(root, **options) -> DatasetSplits``.
DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "deepfashion-inshop": read_deepfashion_inshop,
    "deepfashion-c2s": read_deepfashion_c2s,
    "street2shop": read_street2shop,
    "cub200": read_cub200,
    "cars196": read_cars196,
    "sop": read_sop,
    "omniglot": read_omniglot,
    "fashion-mnist": read_fashion_mnist,
    "csv": read_csv,
    "folder": read_folder,
}


def build_dataset(name: str, root: str | Path | None = None, **options) -> DatasetSplits:
    """Read dataset ``name`` from ``root`` into train / query / gallery :class:`DatasetSplits`; never downloads.

    ``name`` is a key of :data:`DATASETS`. Every reader accepts ``max_per_class`` (keep at most that many
    images per class in every split, chosen deterministically under ``seed``); see each ``read_*`` function
    for its own options. A missing or malformed layout raises ``FileNotFoundError`` / ``ValueError`` naming
    the missing file or folder and the expected layout.
    """
    key = name.lower().replace("_", "-")
    aliases = {"market": "market1501", "market-1501": "market1501", "duke": "dukemtmc", "dukemtmc-reid": "dukemtmc",
               "cub": "cub200", "cub-200-2011": "cub200", "cars": "cars196", "stanford-online-products": "sop",
               "inshop": "deepfashion-inshop", "c2s": "deepfashion-c2s", "fashionmnist": "fashion-mnist"}  # fmt: skip
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    reader = DATASETS[key]
    unknown = sorted(set(options) - _accepted_options(reader))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for dataset {key!r}; expected some of {sorted(_accepted_options(reader))}"
        )
    return reader(root, **options)


def _accepted_options(reader: Callable[..., DatasetSplits]) -> set[str]:
    """Keyword options of a reader; readers with ``**options`` pass them on to :func:`make_splits`."""
    params = inspect.signature(reader).parameters
    names = {
        n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and n != "root")
    }
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names |= {"max_per_class", "max_train_per_class", "max_query_per_class", "max_gallery_per_class", "seed"}
    return names
