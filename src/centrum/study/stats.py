"""The fair protocol's statistics: mean and spread over seeds, paired differences with a t-interval, verdicts.

A claim ("Symm raises MAP@R") is judged from the paired differences ``treatment - base`` over seeds (the same
seed gives both arms the same initialisation and batches), never from one run:

- ``reproduced``: the whole 95 % interval of the mean difference lies above ``min_gain`` (default 0);
- ``not reproduced``: the interval lies entirely below ``min_gain`` (the data rule out the claimed gain);
- ``inconclusive``: the interval straddles ``min_gain``, or there are fewer than two paired seeds.

With ``higher_is_better=False`` (a loss, a time) the differences are negated first, so "gain" keeps its sense.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of ``values``; std is 0 for one value, both NaN for none."""
    values = [float(v) for v in values if not math.isnan(float(v))]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def t_critical(dof: int, confidence: float = 0.95) -> float:
    """The two-sided Student-t quantile ``t_{1-(1-confidence)/2, dof}`` (e.g. 4.303 for dof 2 at 95 %)."""
    if dof < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom, got {dof}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    from scipy.stats import t

    return float(t.ppf(1 - (1 - confidence) / 2, dof))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the ``confidence`` t-interval of the mean of ``values`` (mean +- t * s / sqrt(n)).

    With fewer than two values the interval is unknown: ``low`` and ``high`` are NaN.
    """
    mean, std = mean_std(values)
    n = sum(1 for v in values if not math.isnan(float(v)))
    if n < 2:
        return mean, math.nan, math.nan
    half = t_critical(n - 1, confidence) * std / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(low: float, high: float, min_gain: float = 0.0) -> str:
    """The verdict on a claimed gain from the interval ``[low, high]`` of the mean gain (see module doc)."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if low > min_gain:
        return REPRODUCED
    if high < min_gain:
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class PairedResult:
    """A claim judged on paired runs: the mean difference ``treatment - base`` over ``seeds``, its
    interval, and the verdict. ``diffs`` are the per-seed differences (in the metric's own sense)."""

    metric: str
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean: float
    low: float
    high: float
    verdict: str
    base_mean: float
    treatment_mean: float


def paired_comparison(
    base: Mapping[int, float],
    treatment: Mapping[int, float],
    metric: str = "",
    confidence: float = 0.95,
    min_gain: float = 0.0,
    higher_is_better: bool = True,
) -> PairedResult:
    """Judge ``treatment`` against ``base`` on the seeds both have (``{seed: metric value}``).

    A seed missing from either arm is left out, so every difference compares like with like.
    """
    seeds = tuple(
        sorted(s for s in base if s in treatment and not math.isnan(base[s]) and not math.isnan(treatment[s]))
    )
    sign = 1.0 if higher_is_better else -1.0
    diffs = tuple(sign * (float(treatment[s]) - float(base[s])) for s in seeds)
    mean, low, high = t_interval(diffs, confidence) if diffs else (math.nan, math.nan, math.nan)
    return PairedResult(
        metric=metric,
        seeds=seeds,
        diffs=diffs,
        mean=mean,
        low=low,
        high=high,
        verdict=verdict(low, high, min_gain),
        base_mean=mean_std([base[s] for s in seeds])[0],
        treatment_mean=mean_std([treatment[s] for s in seeds])[0],
    )
