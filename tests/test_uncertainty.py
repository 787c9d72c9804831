"""Conformal intervals (crepes, Mondrian): the reach against hand-computed conformal ranks, coverage of each
outcome on fresh exchangeable data, wider groups where errors are larger, a rare label's misses caught,
ties no longer inflating coverage, the calibrated-scale ends, the checkpoint-file round trip. Most tests
pin v2 (by outcome, `score_bins=0`, still loaded from older checkpoints); the v3 tests (by score bin, what
`calibrate` fits now) are at the end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfuse_core.train.conformal_fit import SUBSETS, fit_intervals
from medfuse_core.runtime.uncertainty import CONFORMAL_FILE, ConformalIntervals


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Independent of crepes: the ceil((n + 1) level)-th smallest score, 1.0 when that rank does not exist."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = int(np.ceil((len(scores) + 1) * level))
    return float(scores[rank - 1]) if 1 <= rank <= len(scores) else 1.0


def _reach_up(positive_scores: np.ndarray, level: float) -> float:
    """crepes' reach up for one group of positives with these 1 - s."""
    s = 1.0 - np.asarray(positive_scores)
    fitted = fit_intervals(s[:, None], np.ones((len(s), 1)), np.full(len(s), 2), ["a"], level=level, score_bins=0)
    return float(fitted.up[0, 1])


def test_the_reach_is_the_ceil_n_plus_1_rank() -> None:
    scores = np.array([0.5, 0.1, 0.4, 0.2, 0.3])  # sorted: .1 .2 .3 .4 .5
    assert _reach_up(scores, 0.5) == pytest.approx(0.3)  # ceil(6 * 0.5) = 3rd smallest
    assert _reach_up(scores, 0.8) == pytest.approx(0.5)  # ceil(4.8) = 5th
    assert _reach_up(scores, 0.9) == 1.0  # ceil(5.4) = 6th does not exist: no information
    assert conformal_quantile(np.array([]), 0.9) == 1.0
    rng = np.random.default_rng(7)
    for n in (20, 57, 300):  # random sizes, away from the exact-integer ranks where float rounding decides
        many = rng.uniform(0, 1, n)
        for level in (0.83, 0.9, 0.95):
            assert _reach_up(many, level) == pytest.approx(conformal_quantile(many, level))


def test_ties_do_not_inflate_coverage_when_scores_are_continuous() -> None:
    """Why the intervals stand on the model's score, not the calibrated probability: with 95 % of
    negatives tied at one calibrated value, a conformal quantile among the ties covers all of them
    (coverage 0.95 at level 0.8); on the continuous score the same patients get the level."""
    rng = np.random.default_rng(11)

    def cohort(n: int) -> tuple[np.ndarray, np.ndarray]:
        s = np.where(rng.random(n) < 0.95, rng.uniform(0.0, 0.01, n), rng.uniform(0.5, 1.0, n))
        return s, np.zeros(n)

    s, y = cohort(5000)
    tied = np.where(s < 0.01, 0.003, s)  # what an isotonic step does to them
    fresh, fresh_y = cohort(5000)
    fresh_tied = np.where(fresh < 0.01, 0.003, fresh)
    on_ties = fit_intervals(tied[:, None], y[:, None], np.full(5000, 4), ["a"], level=0.8, score_bins=0)
    on_scores = fit_intervals(s[:, None], y[:, None], np.full(5000, 4), ["a"], level=0.8, score_bins=0)
    assert (on_ties.intervals(fresh_tied[:, None], np.full(5000, 4))[0] <= 0).mean() > 0.93
    assert (on_scores.intervals(fresh[:, None], np.full(5000, 4))[0] <= 0).mean() == pytest.approx(0.8, abs=0.02)


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
    fitted = fit_intervals(p, y, groups, ["a"], level=0.8, score_bins=0)
    assert [list(r) for r in fitted.calibration_rows[0][:4]] == [
        [int(((groups == g) & (y[:, 0] == 0)).sum()), int(((groups == g) & (y[:, 0] == 1)).sum())] for g in range(1, 5)]
    assert not fitted.calibration_rows[0][4:].any()  # groups 5..15 (other modality sets) had no rows
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
    fitted = fit_intervals(p[:, None], y[:, None], np.ones(4000, dtype=int), ["rare"], level=0.9, score_bins=0)
    low, high = fitted.intervals(np.array([[0.01]]), np.array([1]))
    assert high[0, 0] > 0.8  # the missed positives make the interval reach far up
    assert low[0, 0] == 0.0


def test_a_group_without_enough_rows_gets_the_whole_side_and_unknown_labels_are_left_out() -> None:
    p = np.full((30, 1), 0.9)
    y = np.ones((30, 1))
    y[::2] = np.nan
    groups = np.r_[np.full(27, 4), np.full(3, 1)]
    fitted = fit_intervals(p, y, groups, ["a"], level=0.9, score_bins=0)
    assert list(fitted.calibration_rows[0, 3]) == [0, 13] and list(fitted.calibration_rows[0, 0]) == [0, 2]
    low, high = fitted.intervals(np.array([[0.9], [0.9], [0.9]]), np.array([1, 4, 0]))
    assert (low[0, 0], high[0, 0]) == (0.0, 1.0)  # two positives, no negative: nothing is known either way
    assert high[1, 0] == pytest.approx(1.0) and fitted.up[0, 3] == pytest.approx(0.1)  # 1 - 0.9 on every positive
    assert low[1, 0] == 0.0  # no negative was ever seen with four modalities: the interval reaches 0
    assert (low[2, 0], high[2, 0]) == (0.0, 1.0)  # no modality at all


def test_checkpoint_file_round_trip_and_refusals(tmp_path) -> None:
    p, y, groups = _rows(400, {1: 0.3, 2: 0.2, 3: 0.1, 4: 0.05}, seed=2)
    fitted = fit_intervals(np.hstack([p, p]), np.hstack([y, y]), groups, ["a", "b"], level=0.9, score_bins=0)
    section = json.loads(json.dumps(fitted.save(tmp_path)))
    assert (tmp_path / CONFORMAL_FILE).is_file() and not list(tmp_path.glob("*.pkl"))
    again = ConformalIntervals.load(tmp_path, section, ["a", "b"])
    assert again is not None and again.level == 0.9
    assert np.array_equal(again.up, fitted.up) and np.array_equal(again.down, fitted.down)
    assert np.array_equal(again.calibration_rows, fitted.calibration_rows)
    assert ConformalIntervals.load(tmp_path, None, ["a"]) is None
    assert ConformalIntervals.load(tmp_path, section, ["a", "c"]) is None  # not fitted for label c
    assert ConformalIntervals.load(tmp_path / "elsewhere", section, ["a"]) is None  # no file: no intervals claimed
    only_b = ConformalIntervals.load(tmp_path, section, ["b"])  # a label subset picks its own column
    assert only_b is not None and np.array_equal(only_b.up[0], fitted.up[1])
    with pytest.raises(ValueError, match="from 0 to 1"):
        fit_intervals(np.array([[0.1], [2.0]]), np.array([[0.0], [1.0]]), np.array([1, 1]), ["a"])
    bad = dict(section, level="wide")
    with pytest.raises(ValueError, match="level"):
        ConformalIntervals.load(tmp_path, bad, ["a", "b"])


def test_with_a_calibration_the_interval_is_around_the_calibrated_probability_and_ties_break_by_the_score() -> None:
    """p = an isotonic-like step of the score (ties); the reach is crepes' on 1 - p (positives) and p
    (negatives), ties broken by s: recomputed here by hand with the same ranks."""
    from medfuse_core.runtime.uncertainty import TIE_BREAK, logit

    rng = np.random.default_rng(5)
    n = 3000
    y = (rng.random(n) < 0.3).astype(float)
    s = np.clip(np.where(y == 1, rng.beta(5, 2, n), rng.beta(2, 5, n)), 1e-6, 1 - 1e-6)

    def calibrate(z: np.ndarray) -> np.ndarray:  # three steps, as isotonic gives
        q = 1.0 / (1.0 + np.exp(-np.asarray(z)))
        return np.where(q < 0.4, 0.05, np.where(q < 0.7, 0.5, 0.95))

    fitted = ConformalIntervals(["a"], 0.9, s[:, None], np.full(n, 3), y[:, None], calibrate)
    p = calibrate(logit(s))
    by_hand_up = conformal_quantile((1 - p + TIE_BREAK * (1 - s))[y == 1], 0.9)
    by_hand_down = conformal_quantile((p + TIE_BREAK * s)[y == 0], 0.9)
    assert fitted.up[0, 2] == pytest.approx(by_hand_up, abs=1e-12)
    assert fitted.down[0, 2] == pytest.approx(by_hand_down, abs=1e-12)
    fresh_y = (rng.random(n) < 0.3).astype(float)
    fresh_s = np.clip(np.where(fresh_y == 1, rng.beta(5, 2, n), rng.beta(2, 5, n)), 1e-6, 1 - 1e-6)
    low, high = fitted.intervals(fresh_s[:, None], np.full(n, 3))
    fresh_p = calibrate(logit(fresh_s))[:, None]
    assert np.all((low <= fresh_p + 1e-12) & (fresh_p - 1e-12 <= high))
    reached = np.where(fresh_y[:, None] == 1, high >= 1.0, low <= 0.0)
    for outcome in (0, 1):  # each outcome covered at the level despite the ties (not at the tied 100 %)
        assert reached[fresh_y == outcome].mean() == pytest.approx(0.9, abs=0.03)
    inside = (low > 0) & (low < fresh_p)
    by_hand = np.maximum(fresh_p - fitted.down[0, 2] + TIE_BREAK * fresh_s[:, None], 1e-9)  # an end not reaching 0 stays above it
    np.testing.assert_allclose(low[inside], by_hand[inside], atol=1e-12)


def test_groups_are_the_set_of_modalities_used() -> None:
    from medfuse_core.runtime.uncertainty import group_of

    used = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    assert group_of(used).tolist() == [1, 8, 3, 15, 0]
    # a group never seen in the fit, or no modality: the whole [0, 1]
    fitted = fit_intervals(np.full((40, 1), 0.5), np.r_[np.zeros(20), np.ones(20)][:, None], np.full(40, 3), ["a"],
                           score_bins=0)
    low, high = fitted.intervals(np.full((3, 1), 0.5), np.array([3, 5, 0]))
    assert (low[1, 0], high[1, 0]) == (0.0, 1.0) and (low[2, 0], high[2, 0]) == (0.0, 1.0)
    assert fitted.calibration_rows[0, 2].tolist() == [20, 20] and fitted.calibration_rows[0, 4].tolist() == [0, 0]


def test_subsets_are_every_non_empty_combination_once() -> None:
    assert len(SUBSETS) == 15 and len({tuple(s) for s in SUBSETS}) == 15 and all(s.any() for s in SUBSETS)


def test_an_uploaded_config_with_malformed_intervals_is_refused() -> None:
    from medfuse_core.runtime.checkpoint import check_config

    p, y, groups = _rows(200, {1: 0.3, 2: 0.2, 3: 0.1, 4: 0.05}, seed=3)
    section = fit_intervals(p, y, groups, ["a"], level=0.9, score_bins=0).to_config()
    section["level"] = "wide"
    problems = check_config({"format_version": 1, "model": {"labels": ["a"]}, "features": {}, "uncertainty": section})
    assert any(p.field == "uncertainty" for p in problems)


# ---- v3: Mondrian by set of modalities x bin of the calibrated probability (what `calibrate` fits)


def _ward_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like a ward: a quarter of the positives score like negatives (evidence absent, uncoded), the
    rest are seen; group 1 (one modality) sees less (scores pulled to the middle) than group 4."""
    rng = np.random.default_rng(seed)
    groups = rng.choice([1, 4], n)
    y = (rng.random(n) < 0.3).astype(float)
    hidden = (y == 1) & (rng.random(n) < 0.25)
    seen = rng.beta(6, 2, n)
    unseen = rng.beta(2, 6, n)
    p = np.where((y == 1) & ~hidden, seen, unseen)
    p = np.where(groups == 1, 0.5 + 0.4 * (p - 0.5), p)  # less information: nearer the middle
    return np.clip(p, 0.001, 0.999)[:, None], y[:, None], groups


def test_by_score_bin_each_reach_is_the_conformal_rank_of_its_bin() -> None:
    p, y, groups = _ward_rows(3000, seed=4)
    fitted = fit_intervals(p, y, groups, ["a"], level=0.9)
    assert fitted.score_bins == 5 and fitted.to_config()["method"].endswith("_v3")
    edges = np.quantile(p[:, 0], np.arange(1, 5) / 5)  # independent of the class: numpy's quantiles
    np.testing.assert_allclose(fitted.edges[0], edges)
    residual = np.where(y[:, 0] == 1, 1 - p[:, 0], p[:, 0])  # no calibration: no tie-break either
    for g in (1, 4):
        for b in range(5):
            rows = (groups == g) & (np.searchsorted(edges, p[:, 0], side="right") == b)
            assert fitted.calibration_rows[0, g - 1, b] == rows.sum()
            assert fitted.up[0, g - 1, b] == pytest.approx(min(conformal_quantile(residual[rows], 0.9), 1.0), abs=1e-12)
    assert not fitted.calibration_rows[0, 1:3].any()  # groups 2 and 3 had no rows: the whole range
    low, high = fitted.intervals(np.array([[0.5]]), np.array([2]))
    assert (low[0, 0], high[0, 0]) == (0.0, 1.0)


def test_on_a_ward_by_score_bin_covers_fresh_patients_and_is_narrow_where_the_model_knows_more() -> None:
    """v2 (by outcome) must take every interval up to 1 to cover the hidden positives; v3 keeps the
    level on fresh patients, and its intervals are narrower with four modalities than with one."""
    p, y, groups = _ward_rows(20000, seed=5)
    fresh_p, fresh_y, fresh_groups = _ward_rows(20000, seed=6)
    by_outcome = fit_intervals(p, y, groups, ["a"], level=0.9, score_bins=0)
    by_bin = fit_intervals(p, y, groups, ["a"], level=0.9)
    _, high_v2 = by_outcome.intervals(fresh_p, fresh_groups)
    assert np.median(high_v2) == 1.0  # the positives' side saturates
    low, high = by_bin.intervals(fresh_p, fresh_groups)
    covered = (low[:, 0] <= fresh_y[:, 0]) & (fresh_y[:, 0] <= high[:, 0])
    assert covered.mean() == pytest.approx(0.9, abs=0.015)
    width = high[:, 0] - low[:, 0]
    assert np.median(width[fresh_groups == 1]) > np.median(width[fresh_groups == 4]) + 0.2
    assert np.median(width[fresh_groups == 4]) < 0.6


def test_a_score_bin_checkpoint_round_trips_and_bad_bins_are_refused(tmp_path) -> None:
    p, y, groups = _ward_rows(2000, seed=7)
    fitted = fit_intervals(p, y, groups, ["a"], level=0.9)
    section = json.loads(json.dumps(fitted.save(tmp_path)))
    assert section["score_bins"] == 5 and len(section["bin_edges"]["a"]) == 4
    again = ConformalIntervals.load(tmp_path, section, ["a"])
    assert again is not None and again.score_bins == 5
    np.testing.assert_array_equal(again.up, fitted.up)
    np.testing.assert_array_equal(again.intervals(p, groups)[1], fitted.intervals(p, groups)[1])
    with pytest.raises(ValueError, match="score_bins"):
        ConformalIntervals.load(tmp_path, dict(section, score_bins=1), ["a"])


def test_the_explain_json_names_the_method_the_intervals_were_made_with() -> None:
    from medfuse_core.runtime.trust import patient_trust

    p, y, groups = _ward_rows(2000, seed=8)
    for bins, words in ((5, "a bin of the calibrated probability (5 bins)"), (0, "the outcome")):
        fitted = fit_intervals(p, y, groups, ["a"], level=0.9, score_bins=bins)
        low, high = fitted.intervals(p[:1], groups[:1])
        trust = patient_trust(p[0], np.array([0.5]), None, [], low[0], high[0], 0.9, fitted.description)
        assert trust.to_dict()["intervals"] == {
            "level": 0.9, "method": f"conformal (crepes), Mondrian by label, the set of modalities used and {words}"}


def test_small_categories_take_the_reach_of_their_bin_pooled_over_sets_of_as_many_modalities() -> None:
    """min_rows: set 3 (labs + notes) has a handful of rows, set 5 (labs + vitals) many; with pooling, set
    3's reach in each bin is the conformal rank of the two-modality rows of that bin, computed by hand; a
    set with enough rows keeps its own; a bin where even the pool is small takes the bin over every set."""
    p5, y5, _ = _ward_rows(3000, seed=10)
    p3, y3, _ = _ward_rows(25, seed=11)
    p = np.vstack([p5, p3])
    y = np.vstack([y5, y3])
    groups = np.r_[np.full(3000, 5), np.full(25, 3)]
    plain = fit_intervals(p, y, groups, ["a"], level=0.9)
    pooled = fit_intervals(p, y, groups, ["a"], level=0.9, min_rows=40)
    assert pooled.to_config()["min_rows"] == 40
    residual = np.where(y[:, 0] == 1, 1 - p[:, 0], p[:, 0])
    bins = np.searchsorted(pooled.edges[0], p[:, 0], side="right")
    for b in range(5):
        both = bins == b
        assert pooled.up[0, 2, b] == pytest.approx(min(conformal_quantile(residual[both], 0.9), 1.0), abs=1e-12)
        assert pooled.up[0, 4, b] == plain.up[0, 4, b]  # set 5 has its own rows: unchanged
    assert (plain.calibration_rows[0, 2] < 40).all()
    lonely = fit_intervals(p3, y3, np.full(25, 3), ["a"], level=0.9, min_rows=40)  # no pool of 40 anywhere
    every = np.searchsorted(lonely.edges[0], p3[:, 0], side="right")
    residual3 = np.where(y3[:, 0] == 1, 1 - p3[:, 0], p3[:, 0])
    for b in range(5):
        assert lonely.up[0, 2, b] == pytest.approx(min(conformal_quantile(residual3[every == b], 0.9), 1.0), abs=1e-12)
