"""The fair protocol's statistics against hand-computed values: t-quantiles, intervals and verdicts."""

from __future__ import annotations

import math

import pytest

from centrum.study.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    mean_std,
    paired_comparison,
    t_critical,
    t_interval,
    verdict,
)


def test_t_critical_matches_the_printed_table() -> None:
    # two-sided 95 %: the textbook t-table values for 1, 2, 4 and 30 degrees of freedom
    assert t_critical(1) == pytest.approx(12.706, abs=1e-3)
    assert t_critical(2) == pytest.approx(4.303, abs=1e-3)
    assert t_critical(4) == pytest.approx(2.776, abs=1e-3)
    assert t_critical(30) == pytest.approx(2.042, abs=1e-3)
    assert t_critical(2, confidence=0.90) == pytest.approx(2.920, abs=1e-3)


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(5 / 3)))
    assert mean_std([7.0]) == (7.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_t_interval_by_hand() -> None:
    # mean 2, s = 1, n = 3: half-width = 4.302653 * 1 / sqrt(3) = 2.484138
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert high == pytest.approx(2.0 + 2.484138, abs=1e-6)
    mean, low, high = t_interval([0.5])  # one value: no interval
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    ("low", "high", "min_gain", "expected"),
    [
        (0.01, 0.03, 0.0, REPRODUCED),
        (-0.01, 0.03, 0.0, INCONCLUSIVE),
        (-0.03, -0.01, 0.0, NOT_REPRODUCED),
        (0.01, 0.03, 0.02, INCONCLUSIVE),  # a gain, but maybe not the claimed 0.02
        (0.001, 0.015, 0.02, NOT_REPRODUCED),  # the claimed gain of 0.02 is ruled out
        (math.nan, math.nan, 0.0, INCONCLUSIVE),
    ],
)
def test_verdict_from_the_interval(low: float, high: float, min_gain: float, expected: str) -> None:
    assert verdict(low, high, min_gain) == expected


def test_paired_comparison_on_hand_made_results() -> None:
    base = {0: 0.50, 1: 0.52, 2: 0.51}
    treatment = {0: 0.55, 1: 0.56, 2: 0.57}  # diffs 0.05, 0.04, 0.06: mean 0.05, s = 0.01
    res = paired_comparison(base, treatment, metric="dml/map@r")
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert res.seeds == (0, 1, 2)
    assert res.diffs == pytest.approx((0.05, 0.04, 0.06))
    assert res.mean == pytest.approx(0.05)
    assert (res.low, res.high) == pytest.approx((0.05 - half, 0.05 + half), abs=1e-6)
    assert res.verdict == REPRODUCED
    assert res.base_mean == pytest.approx(0.51) and res.treatment_mean == pytest.approx(0.56)


def test_pairing_is_by_seed_not_by_position() -> None:
    # unpaired, these two arms overlap completely; paired by seed the treatment wins every time by 0.02-0.025
    base = {0: 0.40, 1: 0.60, 2: 0.50}
    treatment = {2: 0.525, 0: 0.42, 1: 0.62}
    res = paired_comparison(base, treatment)
    assert res.diffs == pytest.approx((0.02, 0.02, 0.025))
    assert mean_std([0.40, 0.60, 0.50])[1] > 0.05  # the seed-to-seed spread dwarfs the gain
    assert res.verdict == REPRODUCED


def test_noisy_or_opposite_or_unpaired_results() -> None:
    noisy = paired_comparison({0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.52, 1: 0.47, 2: 0.53})
    assert noisy.low < 0 < noisy.high and noisy.verdict == INCONCLUSIVE
    worse = paired_comparison({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.45, 1: 0.54, 2: 0.66})
    assert worse.high < 0 and worse.verdict == NOT_REPRODUCED
    # seed 3 has no partner and seed 1 is NaN: one pair left, which can never decide
    single = paired_comparison({0: 0.5, 1: math.nan, 3: 0.9}, {0: 0.9, 1: 0.9})
    assert single.seeds == (0,) and single.verdict == INCONCLUSIVE


def test_lower_is_better_flips_the_sign() -> None:
    # step time: the treatment is faster on every seed, which is a gain when lower is better
    res = paired_comparison({0: 10.0, 1: 11.0, 2: 12.0}, {0: 8.0, 1: 9.5, 2: 10.0}, higher_is_better=False)
    assert res.mean == pytest.approx((2.0 + 1.5 + 2.0) / 3)
    assert res.verdict == REPRODUCED
