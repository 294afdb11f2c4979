"""Study files: a base config, a grid of overrides, seeds, the paired comparisons to judge and the analyses to draw.

A study file (YAML)::

    name: symm-losses
    base: ../configs/omniglot_triplet_symm.yaml   # a config path (relative to this file) or an inline config
    overrides: {model.backbone: efficientnet_lite0}   # applied to every cell
    grid:                                          # the cartesian product of the axes gives the cells
      loss:                                        # a named axis: label -> the overrides it applies
        triplet: {objective.loss: triplet, objective.loss_options: {margin: 0.2, mining: hard}}
        npair: {objective.loss: npair, objective.loss_options: {}}
      objective.symm: [false, true]                # a dotted path: the values it takes
    seeds: [0, 1, 2]
    metric: dml/map@r                              # the main metric (protocol/metric of results.json)
    compare:
      - {vary: objective.symm, base: false, treatment: true, metric: dml/map@r, claim: "Symm raises MAP@R",
         min_gain: 0.0, gain_to_detect: 0.01}
    gain_to_detect: 0.01                           # default for every claim (see below)
    analyses: [curves, synthetic_ratio, tsne, ranked_lists, step_cost]
    quick:                                         # what --quick changes
      seeds: [0, 1]
      overrides: {trainer.max_epochs: 1}

``grids:`` (a list of grids) instead of ``grid:`` gives the union of several grids' cells (e.g. alpha x beta and
then top-k). Two cells whose configs are identical share their runs.

A claim's ``min_gain`` is the threshold its gain must clear (default 0: "raises at all"); ``gain_to_detect`` is the
smallest gain worth finding (e.g. one point of Recall@1, 0.01): for a claim left undecided the report says how many
paired seeds would detect that gain with power 0.8 at the observed spread (by default: the observed mean gain).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from centrum.training.config import ExperimentConfig, config_from_dict

ANALYSES = (
    "curves",
    "synthetic_ratio",
    "heatmap",
    "topk",
    "tsne",
    "ranked_lists",
    "centroids",
    "step_cost",
)
STUDY_FIELDS = (
    "name",
    "base",
    "overrides",
    "grid",
    "grids",
    "seeds",
    "metric",
    "compare",
    "analyses",
    "quick",
    "tsne",
    "description",
    "gain_to_detect",
)
COMPARE_FIELDS = ("vary", "base", "treatment", "metric", "claim", "min_gain", "gain_to_detect", "higher_is_better")
#: where each dataset that needs a local copy comes from (said when a study's data.root is missing)
DATA_SOURCES = {
    "omniglot": "Omniglot is not shipped: get its zips (images_background.zip, ...) from "
    "github.com/brendenlake/omniglot",
    "fashion-mnist": "get Fashion-MNIST from github.com/zalandoresearch/fashion-mnist "
    "(or apt-get install dataset-fashion-mnist)",
}


@dataclass(frozen=True)
class Comparison:
    """A paired claim: on every pair of cells that differ only in axis ``vary`` (``base`` vs ``treatment``),
    the treatment raises ``metric`` by more than ``min_gain`` (lowers it, when ``higher_is_better`` is false)."""

    vary: str
    base: str
    treatment: str
    metric: str
    claim: str = ""
    min_gain: float = 0.0
    higher_is_better: bool = True
    #: the smallest gain worth finding; the report's seeds-needed figure is for it (None: the observed gain)
    gain_to_detect: float | None = None


@dataclass(frozen=True)
class Cell:
    """One arm of the study: its axis settings (axis -> value label), the overrides they apply, and the
    folder name of its runs (a readable slug plus a hash of the resolved config, so equal configs share runs)."""

    settings: tuple[tuple[str, str], ...]
    overrides: tuple[tuple[str, Any], ...]
    key: str

    @property
    def label(self) -> str:
        """``"loss=triplet, symm=true"``: the settings, each axis named by its last path component."""
        return ", ".join(f"{axis.split('.')[-1]}={value}" for axis, value in self.settings)

    def setting(self, axis: str) -> str | None:
        """The value label of ``axis`` (matched by full name or by last path component), or None."""
        for name, value in self.settings:
            if name == axis or name.split(".")[-1] == axis:
                return value
        return None


@dataclass
class Study:
    """A parsed study file (see the module doc)."""

    name: str
    base: dict[str, Any]
    overrides: dict[str, Any]
    grids: list[dict[str, dict[str, dict[str, Any]]]]
    seeds: list[int]
    metric: str
    comparisons: list[Comparison]
    analyses: list[str]
    tsne: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: Path | None = None

    def cells(self) -> list[Cell]:
        """Every cell of every grid, in file order, without duplicates (same settings)."""
        cells: dict[tuple, Cell] = {}
        keys: dict[str, str] = {}  # config digest -> the folder of the first cell with that config
        for grid in self.grids:
            axes = list(grid)
            for combo in itertools.product(*(list(grid[a].items()) for a in axes)):
                settings = tuple((a, label) for a, (label, _) in zip(axes, combo, strict=True))
                overrides: dict[str, Any] = {}
                for _, (_, ovr) in zip(axes, combo, strict=True):
                    overrides.update(ovr)
                if settings in cells:
                    continue
                data = self.config_data(overrides)
                data.pop("seed", None)
                digest = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]
                slug = "_".join(f"{a.split('.')[-1]}-{v}" for a, v in settings) or "base"
                slug = re.sub(r"[^A-Za-z0-9._-]+", "-", slug)[:80]
                key = keys.setdefault(digest, f"{slug}_{digest}")
                cells[settings] = Cell(settings, tuple(overrides.items()), key)
        return list(cells.values())

    def config_data(self, cell_overrides: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
        """The plain config data of a cell: the base, the study's overrides, the cell's, then the seed."""
        data = copy.deepcopy(self.base)
        for path, value in [*self.overrides.items(), *cell_overrides.items()]:
            _set_path(data, path, copy.deepcopy(value))
        if seed is not None:
            data["seed"] = seed
        return data

    def config(self, cell: Cell, seed: int) -> ExperimentConfig:
        """The validated experiment config of ``cell`` trained with ``seed``."""
        data = self.config_data(dict(cell.overrides), seed)
        data["name"] = f"{self.name}/{cell.key}"
        try:
            return config_from_dict(data)
        except ValueError as exc:
            raise ValueError(f"study {self.name!r}, cell {cell.label!r}: {exc}") from exc

    def with_seeds(self, count: int) -> Study:
        """This study with ``count`` seeds: the file's first ``count``, or all of them followed by the next
        unused integers (so that runs already trained with the file's seeds are kept and reused)."""
        if count < 1:
            raise ValueError(f"--seeds must be at least 1, got {count}")
        return dataclasses.replace(self, seeds=extended_seeds(self.seeds, count))

    def check_data(self) -> None:
        """Raise ``FileNotFoundError`` naming the cell, the field and where to get the data when a cell's
        ``data.root`` does not exist (before anything is created or trained)."""
        for cell in self.cells():
            config = self.config(cell, self.seeds[0])
            dataset = config.data.dataset.lower().replace("_", "-")
            root = config.data.root
            if root is None:
                if dataset in ("fashion-mnist", "fashionmnist", "csv", "folder"):
                    continue  # Fashion-MNIST has a default place (its reader names it); csv/folder need no check here
                raise FileNotFoundError(
                    f"study {self.name!r}, cell {cell.label!r}: data.root is not set for dataset {dataset!r}. "
                    f"{DATA_SOURCES.get(dataset, 'see docs/data.md for its layout')}; then --set data.root=PATH"
                )
            if Path(root).expanduser().exists():
                continue
            source = DATA_SOURCES.get(dataset, f"{dataset} is read from a local copy (docs/data.md)")
            relative = "" if Path(root).is_absolute() else f" (relative to {Path.cwd()})"
            if any(path == "data.root" for path, _ in cell.overrides):
                # the cell sets its own root, which a --set (applied to every cell, before the cell's) cannot change
                how = f"set that cell's data.root in {self.source or 'the study'}"
            else:
                how = "point at it with --set data.root=PATH"
            raise FileNotFoundError(
                f"study {self.name!r}, cell {cell.label!r}: data.root {root} does not exist{relative}. "
                f"{source}; then {how}"
            )


def extended_seeds(seeds: list[int], count: int) -> list[int]:
    """The first ``count`` of ``seeds``, extended past its end by the smallest integers not yet in it."""
    out = list(seeds[:count])
    candidate = max(seeds, default=-1) + 1
    while len(out) < count:
        if candidate not in out:
            out.append(candidate)
        candidate += 1
    return out


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in nested config data (``objective.symm_options.alpha``), creating mappings."""
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {path!r}: {key!r} is not a section")
    node[keys[-1]] = value


def value_label(value: Any) -> str:
    """The label of a grid value: ``true``/``false`` for booleans (as YAML writes them), else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_grid(grid: Any, where: str) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"{where} must be a non-empty mapping of axis -> values, got {grid!r}")
    axes: dict[str, dict[str, dict[str, Any]]] = {}
    for axis, values in grid.items():
        if isinstance(values, dict):  # a named axis: label -> overrides
            if not values or not all(isinstance(v, dict) for v in values.values()):
                raise ValueError(f"{where}.{axis}: a named axis maps each label to a mapping of overrides")
            axes[str(axis)] = {str(label): dict(ovr) for label, ovr in values.items()}
        elif isinstance(values, list) and values:
            axes[str(axis)] = {value_label(v): {str(axis): v} for v in values}
        else:
            raise ValueError(
                f"{where}.{axis} must be a non-empty list of values or a mapping of labels, got {values!r}"
            )
    return axes


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def _parse_overrides(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping of dotted paths to values, got {value!r}")
    return {str(k): v for k, v in value.items()}


def study_from_dict(
    raw: dict[str, Any], source: Path | None = None, quick: bool = False, extra_overrides: list[str] | None = None
) -> Study:
    """Parse study data (see the module doc); ``quick`` applies the file's ``quick:`` section, then
    ``extra_overrides`` (``path=value``, values read as YAML: the command line's ``--set``) apply to every cell."""
    where = f"study file {source}" if source else "study"
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"a single value ({raw!r})"
        raise ValueError(f"{where} must be a mapping of study fields ({', '.join(STUDY_FIELDS[:4])}, ...), got {kind}")
    unknown = sorted(set(raw) - set(STUDY_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown study field(s) {unknown}; valid: {', '.join(STUDY_FIELDS)}")
    raw = copy.deepcopy(raw)
    if quick:
        q = raw.get("quick") or {}
        if not isinstance(q, dict):
            raise ValueError(f"{where}: quick must be a mapping (seeds, overrides, grid, grids)")
        bad = sorted(set(q) - {"seeds", "overrides", "grid", "grids"})
        if bad:
            raise ValueError(f"{where}: unknown quick field(s) {bad}; valid: seeds, overrides, grid, grids")
        raw["overrides"] = {**(raw.get("overrides") or {}), **(q.get("overrides") or {})}
        if "seeds" in q:
            raw["seeds"] = q["seeds"]
        for key, other in (("grid", "grids"), ("grids", "grid")):
            if key in q:  # the quick grid replaces the full one
                raw.pop(other, None)
                raw[key] = q[key]
        raw["name"] = f"{raw.get('name', 'study')}-quick"
    for item in extra_overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value (e.g. trainer.accelerator=gpu)")
        path, value = item.split("=", 1)
        raw["overrides"] = {**(raw.get("overrides") or {}), path.strip(): yaml.safe_load(value) if value else None}
    base = raw.get("base")
    if isinstance(base, str):
        path = Path(base)
        if not path.is_absolute() and source is not None:
            path = source.parent / path
        if not path.is_file():
            raise FileNotFoundError(f"{where}: base config {path} does not exist")
        base = yaml.safe_load(path.read_text()) or {}
    if not isinstance(base, dict):
        raise ValueError(f"{where}: base must be a config path or an inline config mapping, got {base!r}")
    if "grid" in raw and "grids" in raw:
        raise ValueError(f"{where}: give either grid or grids, not both")
    grids_raw = raw.get("grids") if "grids" in raw else [raw.get("grid")]
    if not isinstance(grids_raw, list) or not grids_raw:
        raise ValueError(f"{where}: grids must be a non-empty list of grids")
    grids = [
        _parse_grid(g, f"{where}: grid" if len(grids_raw) == 1 else f"{where}: grids[{i}]")
        for i, g in enumerate(grids_raw)
    ]
    seeds = raw.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ValueError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds must be distinct, got {seeds!r}")
    metric = raw.get("metric")
    if not isinstance(metric, str) or "/" not in metric:
        raise ValueError(f"{where}: metric must name protocol/metric (e.g. dml/map@r), got {metric!r}")
    axes = {a for g in grids for a in g}
    comparisons = []
    for i, c in enumerate(raw.get("compare") or []):
        if not isinstance(c, dict) or not {"vary", "base", "treatment"} <= set(c):
            raise ValueError(f"{where}: compare[{i}] needs vary, base and treatment, got {c!r}")
        extra = sorted(set(c) - set(COMPARE_FIELDS))
        if extra:
            raise ValueError(f"{where}: compare[{i}] has unknown field(s) {extra}")
        detect = c.get("gain_to_detect", raw.get("gain_to_detect"))
        if c["vary"] not in axes:
            raise ValueError(f"{where}: compare[{i}].vary {c['vary']!r} is not a grid axis; axes: {sorted(axes)}")
        comparisons.append(
            Comparison(
                vary=str(c["vary"]),
                base=value_label(c["base"]),
                treatment=value_label(c["treatment"]),
                metric=str(c.get("metric", metric)),
                claim=str(c.get("claim", "")),
                min_gain=_number(c.get("min_gain", 0.0), f"{where}: compare[{i}].min_gain"),
                higher_is_better=bool(c.get("higher_is_better", True)),
                gain_to_detect=None if detect is None else _number(detect, f"{where}: compare[{i}].gain_to_detect"),
            )
        )
    analyses = raw.get("analyses", list(ANALYSES))
    if not isinstance(analyses, list) or any(a not in ANALYSES for a in analyses):
        raise ValueError(f"{where}: analyses must be a list drawn from {', '.join(ANALYSES)}, got {analyses!r}")
    tsne = raw.get("tsne") or {}
    if not isinstance(tsne, dict):
        raise ValueError(f"{where}: tsne must be a mapping (epochs, classes, per_class)")
    study = Study(
        name=str(raw.get("name", source.stem if source else "study")),
        base=base,
        overrides=_parse_overrides(raw.get("overrides"), f"{where}: overrides"),
        grids=grids,
        seeds=list(seeds),
        metric=metric,
        comparisons=comparisons,
        analyses=list(analyses),
        tsne=tsne,
        description=str(raw.get("description", "")),
        source=source,
    )
    for cell in study.cells():  # every cell's config is checked before anything trains
        study.config(cell, study.seeds[0])
    return study


def load_study(path: str | Path, quick: bool = False, extra_overrides: list[str] | None = None) -> Study:
    """Read and validate a study file; ``quick`` applies its ``quick:`` section and ``extra_overrides``
    (``path=value``) are applied to every cell last."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"study file {path} is not valid YAML: {exc}") from exc
    if raw is None:
        raise ValueError(f"study file {path} is empty: it needs at least base, grid, seeds and metric (see studies/)")
    return study_from_dict(raw, source=path, quick=quick, extra_overrides=extra_overrides)


__all__ = [
    "ANALYSES",
    "Cell",
    "Comparison",
    "Study",
    "extended_seeds",
    "load_study",
    "study_from_dict",
    "value_label",
]
