"""Conformal intervals: the quantile against hand-computed ranks, coverage on fresh exchangeable data,
wider groups where errors are larger, and the config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfuse_core.train.conformal_fit import SUBSETS, fit_intervals
from medfuse_core.uncertainty import ConformalIntervals, conformal_quantile


def test_conformal_quantile_is_the_ceil_n_plus_1_rank() -> None:
    scores = np.array([0.5, 0.1, 0.4, 0.2, 0.3])  # sorted: .1 .2 .3 .4 .5
    assert conformal_quantile(scores, 0.5) == 0.3  # ceil(6 * 0.5) = 3rd smallest
    assert conformal_quantile(scores, 0.8) == 0.5  # ceil(4.8) = 5th
    assert conformal_quantile(scores, 0.9) == 1.0  # ceil(5.4) = 6th does not exist: no information
    assert conformal_quantile(np.array([]), 0.9) == 1.0


def _rows(n: int, noise_by_group: dict[int, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, outcomes drawn from a truth the probability misses by the group's noise, groups."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(1, 5, n)
    truth = rng.uniform(0.02, 0.98, n)
    noise = np.array([noise_by_group[g] for g in groups])
    p = np.clip(truth + rng.normal(0, 1, n) * noise, 0.001, 0.999)
    y = (rng.random(n) < truth).astype(float)
    return p[:, None], y[:, None], groups


def test_intervals_cover_fresh_patients_at_the_level_and_widen_where_errors_are_larger() -> None:
    noise = {1: 0.35, 2: 0.2, 3: 0.1, 4: 0.02}
    p, y, groups = _rows(20000, noise, seed=0)
    fitted = fit_intervals(p, y, groups, ["a"], level=0.8)
    assert list(fitted.calibration_rows[0]) == [int((groups == g).sum()) for g in range(1, 5)]
    fresh_p, fresh_y, fresh_groups = _rows(20000, noise, seed=1)
    low, high = fitted.intervals(fresh_p, fresh_groups)
    covered = (low <= fresh_y) & (fresh_y <= high)
    for g in range(1, 5):
        assert covered[fresh_groups == g].mean() == pytest.approx(0.8, abs=0.02)
    assert fitted.half_width[0, 0] > fitted.half_width[0, 3]  # one modality: wider than four
    assert np.all((low >= 0) & (high <= 1) & (low <= fresh_p) & (fresh_p <= high))


def test_a_group_without_enough_rows_gets_the_whole_range_and_unknown_labels_are_left_out() -> None:
    p = np.full((30, 1), 0.9)
    y = np.ones((30, 1))
    y[::2] = np.nan
    groups = np.r_[np.full(27, 4), np.full(3, 1)]
    fitted = fit_intervals(p, y, groups, ["a"], level=0.9)
    assert fitted.calibration_rows[0, 3] == 13 and fitted.calibration_rows[0, 0] == 2  # known labels: odd rows
    low, high = fitted.intervals(np.array([[0.9], [0.9], [0.9]]), np.array([1, 4, 0]))
    assert (low[0, 0], high[0, 0]) == (0.0, 1.0)  # two rows for one modality: too few at 90 %, nothing is known
    assert (low[1, 0], high[1, 0]) == pytest.approx((0.8, 1.0))  # |1 - 0.9| = 0.1 on every row
    assert (low[2, 0], high[2, 0]) == (0.0, 1.0)  # no modality at all


def test_config_round_trip_and_refusals() -> None:
    p, y, groups = _rows(400, {1: 0.3, 2: 0.2, 3: 0.1, 4: 0.05}, seed=2)
    fitted = fit_intervals(np.hstack([p, p]), np.hstack([y, y]), groups, ["a", "b"], level=0.9)
    again = ConformalIntervals.from_config(json.loads(json.dumps(fitted.to_config())), ["a", "b"])
    assert again is not None and np.array_equal(again.half_width, fitted.half_width) and again.level == 0.9
    assert ConformalIntervals.from_config(None, ["a"]) is None
    assert ConformalIntervals.from_config(fitted.to_config(), ["a", "c"]) is None  # not fitted for label c
    bad = fitted.to_config()
    bad["half_width"]["a"] = [0.1, 2.0, 0.1, 0.1]
    with pytest.raises(ValueError, match="from 0 to 1"):
        ConformalIntervals.from_config(bad, ["a", "b"])


def test_subsets_are_every_non_empty_combination_once() -> None:
    assert len(SUBSETS) == 15 and len({tuple(s) for s in SUBSETS}) == 15 and all(s.any() for s in SUBSETS)


def test_an_uploaded_config_with_malformed_intervals_is_refused() -> None:
    from medfuse_core.train.checkpoint import check_config

    p, y, groups = _rows(200, {1: 0.3, 2: 0.2, 3: 0.1, 4: 0.05}, seed=3)
    section = fit_intervals(p, y, groups, ["a"], level=0.9).to_config()
    section["half_width"]["a"] = [0.5, "wide", 0.1, 0.1]
    problems = check_config({"format_version": 1, "model": {"labels": ["a"]}, "features": {}, "uncertainty": section})
    assert any(p.field == "uncertainty" for p in problems)
