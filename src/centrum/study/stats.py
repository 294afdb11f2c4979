"""The fair protocol's statistics: mean and spread over seeds, paired differences with a t-interval, verdicts.

A claim ("Symm raises MAP@R") is judged from the paired differences ``treatment - base`` over seeds (the same
seed gives both arms the same initialisation and batches), never from one run:

- ``reproduced``: the whole 95 % interval of the mean difference lies above ``min_gain`` (default 0);
- ``not reproduced``: the interval lies entirely below ``min_gain`` (the data rule out the claimed gain);
- ``inconclusive``: the interval straddles ``min_gain``, or there are fewer than two paired seeds.

With ``higher_is_better=False`` (a loss, a time) the differences are negated first, so "gain" keeps its sense.

Two more verdicts come before any statistics: ``identical arms`` (both arms trained to the same weights at every
paired seed: the treatment did nothing) and ``collapsed`` (an arm's final test embeddings all lie within 1e-3 cosine
distance of one another: the comparison is between degenerate models). See :func:`sanity_verdict`.

**Adding seeds without inflating the error rate** (:class:`SequentialDesign`). Looking at the interval after every
new seed and stopping when it first excludes zero raises the false-positive rate far above 5 % (to 23 % over 3..20
seeds; ``tests/study/test_sequential.py`` measures it). A group-sequential design fixes, before any data, the seed
counts at which the claims are looked at (``looks``, e.g. 3, 5, 8, 12) and spends the 5 % over them with the
Lan-DeMets O'Brien-Fleming-like function ``alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))`` of the information
fraction ``t = n / n_max``: almost nothing at the first looks, nearly the full 5 % at the last. At look ``k`` the
claim is decided when the paired t-statistic ``(mean - min_gain) / (s / sqrt(n))`` leaves ``[-c_k, c_k]``; the
boundaries ``c_k`` are calibrated for the t-statistic itself (it is pivotal for normal differences: its null
distribution does not depend on the spread), exactly at the first look and by a fixed-seed simulation of the joint
null distribution at later ones, so the total false-positive rate stays at ``alpha``. The interval reported at a
look is the repeated confidence interval ``mean +- c_k s / sqrt(n)``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
IDENTICAL = "identical arms"
COLLAPSED = "collapsed"
#: an arm whose largest pairwise cosine distance among its final test embeddings is below this has collapsed
COLLAPSE_DISTANCE = 1e-3


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
    #: how the verdict was reached: ``"fixed"`` (one t-interval over all seeds) or ``"look k/K"`` of a design
    design: str = "fixed"
    #: seeds that would detect the claim's gain with power 0.8 at the observed spread (None: not computed)
    seeds_needed: int | None = None
    #: the gain ``seeds_needed`` is computed for (in the metric's units), and what it is
    detect_gain: float = math.nan
    note: str = ""


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
    return _result(metric, seeds, diffs, mean, low, high, verdict(low, high, min_gain), base, treatment)


def _result(
    metric: str,
    seeds: tuple,
    diffs: tuple[float, ...],
    mean: float,
    low: float,
    high: float,
    decided: str,
    base: dict,
    treatment: dict,
    design: str | None = None,
) -> PairedResult:
    """A :class:`PairedResult` with both arms' means over ``seeds``."""
    extra = {} if design is None else {"design": design}
    return PairedResult(
        metric=metric,
        seeds=seeds,
        diffs=diffs,
        mean=mean,
        low=low,
        high=high,
        verdict=decided,
        base_mean=mean_std([base[s] for s in seeds])[0],
        treatment_mean=mean_std([treatment[s] for s in seeds])[0],
        **extra,
    )


# ------------------------------------------------------------------------------------------ power and seeds


def paired_t_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs, when the true mean difference
    (beyond the tested value) is ``effect`` and the differences' standard deviation is ``sd``: the probability
    that a noncentral t with ``n - 1`` degrees of freedom and noncentrality ``effect sqrt(n) / sd`` leaves
    ``[-t_crit, t_crit]``."""
    from scipy.stats import nct

    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if effect != 0 else alpha
    crit = t_critical(n - 1, 1 - alpha)
    nc = effect * math.sqrt(n) / sd
    value = float(nct.sf(crit, n - 1, nc) + nct.cdf(-crit, n - 1, nc))
    if math.isnan(value):  # scipy's noncentral t gives up far in the tails: its normal limit is exact enough
        from scipy.stats import norm

        value = float(norm.sf(crit - nc) + norm.cdf(-crit - nc))
    return value


def seeds_needed(
    effect: float, sd: float, power: float = 0.8, alpha: float = 0.05, max_seeds: int = 100_000
) -> int | None:
    """The fewest paired seeds whose two-sided paired t-test at ``alpha`` detects a true gain ``effect`` with
    probability ``power`` when the differences spread with ``sd``; None when no number up to ``max_seeds``
    does (e.g. ``effect`` is 0) or ``sd`` is unknown."""
    if math.isnan(effect) or math.isnan(sd) or effect == 0:
        return None
    if sd <= 0:
        return 2
    high = 2
    while paired_t_power(high, effect, sd, alpha) < power:  # doubling, then bisection: power rises with n
        if high >= max_seeds:
            return None
        high = min(max_seeds, 2 * high)
    low = max(2, high // 2)
    while low < high:
        mid = (low + high) // 2
        if paired_t_power(mid, effect, sd, alpha) >= power:
            high = mid
        else:
            low = mid + 1
    return low


# ------------------------------------------------------------------------------------- group-sequential design


def obrien_fleming_spending(fraction: float, alpha: float = 0.05) -> float:
    """The Lan-DeMets O'Brien-Fleming-like alpha spent by information fraction ``fraction`` (two-sided):
    ``2 - 2 Phi(z_{1-alpha/2} / sqrt(fraction))``; 0 at 0 and ``alpha`` at 1."""
    from scipy.stats import norm

    if fraction <= 0:
        return 0.0
    fraction = min(1.0, fraction)
    return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(fraction)))


def null_t_paths(looks: Sequence[int], simulations: int, rng: np.random.Generator) -> np.ndarray:
    """Paired t-statistics at each of ``looks`` (cumulative seed counts) of ``simulations`` studies whose
    differences are standard normal (no effect): shape ``(simulations, len(looks))``."""
    n_max = looks[-1]
    d = rng.standard_normal((simulations, n_max))
    csum, csq = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    out = np.empty((simulations, len(looks)))
    for k, n in enumerate(looks):
        mean = csum[:, n - 1] / n
        var = np.maximum(csq[:, n - 1] - n * mean * mean, 0.0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, k] = mean / np.sqrt(var / n)
    return out


@dataclass(frozen=True)
class SequentialDesign:
    """A group-sequential design: claims are looked at after ``looks[k]`` paired seeds and decided when the
    paired t-statistic's absolute value reaches ``boundaries[k]``; over all looks the chance of deciding a claim
    whose true gain is exactly ``min_gain`` stays at ``alpha`` (see the module doc)."""

    looks: tuple[int, ...]
    boundaries: tuple[float, ...]
    alpha: float = 0.05

    def to_dict(self) -> dict:
        """Plain data for ``sequential.json``."""
        return {"looks": list(self.looks), "boundaries": list(self.boundaries), "alpha": self.alpha}


def default_looks(first: int, max_seeds: int) -> list[int]:
    """Planned looks from ``first`` seeds up to ``max_seeds``: each about 1.5 times the previous."""
    if first < 2:
        raise ValueError(f"a sequential study needs at least 2 seeds at its first look, got {first}")
    if max_seeds < first:
        raise ValueError(f"the maximum number of seeds ({max_seeds}) is below the first look's {first}")
    looks = [first]
    while looks[-1] < max_seeds:
        looks.append(min(max_seeds, max(looks[-1] + 1, math.ceil(looks[-1] * 1.5))))
    return looks


@functools.lru_cache(maxsize=32)
def _boundaries(looks: tuple[int, ...], alpha: float, simulations: int) -> tuple[float, ...]:
    from scipy.stats import t as student_t

    spent = [obrien_fleming_spending(n / looks[-1], alpha) for n in looks]
    spend = np.diff([0.0, *spent])
    # the first look's boundary is exact (its t-statistic has a plain Student-t null distribution)
    bounds = [float(student_t.ppf(1 - spend[0] / 2, looks[0] - 1))]
    if len(looks) == 1:
        return tuple(bounds)
    paths = np.abs(null_t_paths(looks, simulations, np.random.default_rng(20240229)))
    alive = paths[:, 0] < bounds[0]
    for k in range(1, len(looks)):
        target = spend[k] * simulations  # studies first decided at look k, out of all simulated ones
        marginal = float(student_t.ppf(1 - spend[k] / 2, looks[k] - 1))
        if target < 50:
            # too few simulated crossings to place the boundary: the marginal quantile is conservative
            # (P(cross here and not before) <= P(cross here) = spend)
            bound = marginal
        else:
            values = np.sort(paths[alive, k])[::-1]
            bound = float(values[int(target)]) if int(target) < len(values) else 0.0
        bounds.append(bound)
        alive &= paths[:, k] < bound
    return tuple(bounds)


def sequential_design(looks: Sequence[int], alpha: float = 0.05, simulations: int = 200_000) -> SequentialDesign:
    """The O'Brien-Fleming-spending group-sequential design over ``looks`` (increasing seed counts, the first at
    least 2) at overall two-sided level ``alpha``; deterministic (fixed simulation seed) and cached."""
    looks = tuple(int(n) for n in looks)
    if not looks or looks[0] < 2 or any(b <= a for a, b in itertools.pairwise(looks)):
        raise ValueError(f"looks must be increasing seed counts starting at 2 or more, got {list(looks)}")
    return SequentialDesign(looks, _boundaries(looks, float(alpha), int(simulations)), float(alpha))


def sequential_comparison(
    base: Mapping[int, float],
    treatment: Mapping[int, float],
    design: SequentialDesign,
    seed_order: Sequence[int],
    metric: str = "",
    min_gain: float = 0.0,
    higher_is_better: bool = True,
) -> PairedResult:
    """Judge a claim under ``design``: replay its looks in order on the first ``looks[k]`` seeds of
    ``seed_order`` and stop at the first look whose t-statistic crosses the boundary. A look whose seeds are not
    all finished in both arms ends the replay (the claim stays inconclusive, at the last complete look)."""
    sign = 1.0 if higher_is_better else -1.0
    chosen: PairedResult | None = None
    for k, n in enumerate(design.looks):
        seeds = tuple(seed_order[:n])
        if len(seeds) < n or any(
            s not in base or s not in treatment or math.isnan(base[s]) or math.isnan(treatment[s]) for s in seeds
        ):
            break
        diffs = tuple(sign * (float(treatment[s]) - float(base[s])) for s in seeds)
        mean, sd = mean_std(diffs)
        half = design.boundaries[k] * sd / math.sqrt(n)
        low, high = mean - half, mean + half
        decided = verdict(low, high, min_gain)
        chosen = _result(
            metric, seeds, diffs, mean, low, high, decided, base, treatment, f"look {k + 1}/{len(design.looks)}"
        )
        if decided != INCONCLUSIVE:
            break
    if chosen is None:
        result = paired_comparison(base, treatment, metric, min_gain=min_gain, higher_is_better=higher_is_better)
        return dataclasses.replace(result, verdict=INCONCLUSIVE, design="before the first look")
    return chosen


def with_seeds_needed(result: PairedResult, gain: float | None, min_gain: float = 0.0) -> PairedResult:
    """``result`` with the seeds a fixed-size paired t-test would need to detect ``gain`` (default: the observed
    mean gain) over ``min_gain`` with power 0.8 at the observed spread of the differences."""
    if len(result.diffs) < 2:
        return result
    target = result.mean if gain is None else gain
    sd = mean_std(result.diffs)[1]
    return dataclasses.replace(result, seeds_needed=seeds_needed(target - min_gain, sd), detect_gain=float(target))


def sanity_verdict(
    same_weights: Sequence[bool], base_spreads: Sequence[float], treatment_spreads: Sequence[float]
) -> tuple[str, str] | None:
    """``(verdict, note)`` when statistics would mislead, else None: ``identical arms`` when every paired seed
    trained both arms to the same weights (``same_weights``, one entry per paired seed), ``collapsed`` when every
    seed of an arm ended with all pairwise cosine distances of its test embeddings below ``COLLAPSE_DISTANCE``
    (``*_spreads``: the largest such distance per seed)."""
    if same_weights and all(same_weights):
        return IDENTICAL, f"both arms trained to bit-identical weights at all {len(same_weights)} seeds"
    collapsed = []
    for arm, spreads in (("base", base_spreads), ("treatment", treatment_spreads)):
        if spreads and all(s < COLLAPSE_DISTANCE for s in spreads):
            collapsed.append(arm)
    if collapsed:
        arms = " and ".join(collapsed) + (" arms" if len(collapsed) > 1 else " arm")
        return COLLAPSED, f"{arms}: every pairwise cosine distance < {COLLAPSE_DISTANCE:g} at every seed"
    return None
