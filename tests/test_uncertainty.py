"""Conformal intervals: the quantile against hand-computed ranks, coverage of each outcome on fresh
exchangeable data, wider groups where errors are larger, a rare label's misses caught, the config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfuse_core.train.conformal_fit import SUBSETS, fit_intervals
from medfuse_core.runtime.uncertainty import ConformalIntervals, conformal_quantile


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
    assert [list(r) for r in fitted.calibration_rows[0]] == [
        [int(((groups == g) & (y[:, 0] == 0)).sum()), int(((groups == g) & (y[:, 0] == 1)).sum())] for g in range(1, 5)]
    fresh_p, fresh_y, fresh_groups = _rows(20000, noise, seed=1)
    low, high = fitted.intervals(fresh_p, fresh_groups)
    covered = np.where(fresh_y == 1, high >= 1.0, low <= 0.0)  # a positive's interval reaches 1, a negative's 0
    for g in range(1, 5):
        for outcome in (0, 1):
            rows = (fresh_groups == g) & (fresh_y[:, 0] == outcome)
            assert covered[rows].mean() == pytest.approx(0.8, abs=0.025)
    assert fitted.up[0, 0] > fitted.up[0, 3] and fitted.down[0, 0] > fitted.down[0, 3]  # one modality: wider
    assert np.all((low >= 0) & (high <= 1) & (low <= fresh_p) & (fresh_p <= high))


def test_a_rare_label_the_model_misses_gets_an_interval_reaching_the_missed_outcome() -> None:
    # 5 % positives, and the model gives every one of them a low probability: pooled |y - p| would stay near 0
    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.05).astype(float)
    p = np.where(y == 1, rng.uniform(0.0, 0.2, 4000), rng.uniform(0.0, 0.02, 4000))
    fitted = fit_intervals(p[:, None], y[:, None], np.ones(4000, dtype=int), ["rare"], level=0.9)
    low, high = fitted.intervals(np.array([[0.01]]), np.array([1]))
    assert high[0, 0] > 0.8  # the missed positives make the interval reach far up
    assert low[0, 0] == 0.0


def test_a_group_without_enough_rows_gets_the_whole_side_and_unknown_labels_are_left_out() -> None:
    p = np.full((30, 1), 0.9)
    y = np.ones((30, 1))
    y[::2] = np.nan
    groups = np.r_[np.full(27, 4), np.full(3, 1)]
    fitted = fit_intervals(p, y, groups, ["a"], level=0.9)
    assert list(fitted.calibration_rows[0, 3]) == [0, 13] and list(fitted.calibration_rows[0, 0]) == [0, 2]
    low, high = fitted.intervals(np.array([[0.9], [0.9], [0.9]]), np.array([1, 4, 0]))
    assert (low[0, 0], high[0, 0]) == (0.0, 1.0)  # two positives, no negative: nothing is known either way
    assert high[1, 0] == pytest.approx(1.0) and fitted.up[0, 3] == pytest.approx(0.1)  # 1 - 0.9 on every positive
    assert low[1, 0] == 0.0  # no negative was ever seen with four modalities: the interval reaches 0
    assert (low[2, 0], high[2, 0]) == (0.0, 1.0)  # no modality at all


def test_config_round_trip_and_refusals() -> None:
    p, y, groups = _rows(400, {1: 0.3, 2: 0.2, 3: 0.1, 4: 0.05}, seed=2)
    fitted = fit_intervals(np.hstack([p, p]), np.hstack([y, y]), groups, ["a", "b"], level=0.9)
    again = ConformalIntervals.from_config(json.loads(json.dumps(fitted.to_config())), ["a", "b"])
    assert again is not None and again.level == 0.9
    assert np.array_equal(again.up, fitted.up) and np.array_equal(again.down, fitted.down)
    assert np.array_equal(again.calibration_rows, fitted.calibration_rows)
    assert ConformalIntervals.from_config(None, ["a"]) is None
    assert ConformalIntervals.from_config(fitted.to_config(), ["a", "c"]) is None  # not fitted for label c
    bad = fitted.to_config()
    bad["up"]["a"] = [0.1, 2.0, 0.1, 0.1]
    with pytest.raises(ValueError, match="from 0 to 1"):
        ConformalIntervals.from_config(bad, ["a", "b"])


def test_subsets_are_every_non_empty_combination_once() -> None:
    assert len(SUBSETS) == 15 and len({tuple(s) for s in SUBSETS}) == 15 and all(s.any() for s in SUBSETS)


def test_an_uploaded_config_with_malformed_intervals_is_refused() -> None:
    from medfuse_core.runtime.checkpoint import check_config

    p, y, groups = _rows(200, {1: 0.3, 2: 0.2, 3: 0.1, 4: 0.05}, seed=3)
    section = fit_intervals(p, y, groups, ["a"], level=0.9).to_config()
    section["down"]["a"] = [0.5, "wide", 0.1, 0.1]
    problems = check_config({"format_version": 1, "model": {"labels": ["a"]}, "features": {}, "uncertainty": section})
    assert any(p.field == "uncertainty" for p in problems)
