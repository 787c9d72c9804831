"""Per-label calibration, thresholds on the calibrated probability, ECE and reliability bins,
checked against values computed by hand or independently (brute force, closed form)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from medfuse_core.runtime.calibration import Calibration, LabelCalibration
from medfuse_core.train.calibrate import fit_calibration_to_logits, fit_label
from medfuse_core.runtime.checkpoint import check_config
from medfuse_core.train.evaluate import reliability_table
from medfuse_core.runtime.calibration import sigmoid
from medfuse_core.train.metrics import best_f1_threshold, expected_calibration_error, wilson_interval


def brute_force_best_f1(y: np.ndarray, scores: np.ndarray) -> float:
    """The best F1 of any decision `score >= t`, t over every distinct score (sklearn's f1_score)."""
    return max(f1_score(y.astype(int), scores >= t, zero_division=0) for t in np.unique(scores))


# ---- ECE and reliability bins, hand-computed


def test_ece_uses_left_closed_bins_hand_computed() -> None:
    # 10 bins [0, .1), [.1, .2), ...: 0.1 and 0.19 share [.1, .2); 0.2 opens [.2, .3)
    y = np.array([1.0, 0.0, 0.0])
    p = np.array([0.1, 0.19, 0.2])
    # |0.145 - 0.5| * 2/3 + |0.2 - 0| * 1/3 = 0.91 / 3; right-closed (shifted) bins would give 1.29 / 3
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.91 / 3, abs=1e-12)


def test_ece_puts_probability_one_in_the_last_bin_and_ignores_unknown_labels() -> None:
    y = np.array([1.0, 1.0, 0.0, np.nan])
    p = np.array([1.0, 0.95, 0.05, 0.5])
    # [0.9, 1]: mean 0.975 vs 1 -> 0.025 * 2/3; [0, .1): 0.05 vs 0 -> 0.05 * 1/3
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.025 * 2 / 3 + 0.05 / 3, abs=1e-12)
    assert expected_calibration_error(y, p, bins=15) == pytest.approx(
        # 15 bins: 0.95 and 1.0 in [14/15, 1]; 0.05 in [0, 1/15)
        0.025 * 2 / 3 + 0.05 / 3, abs=1e-12)


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(2, 10)  # textbook: 0.0567 to 0.5098
    assert low == pytest.approx(0.05668, abs=1e-4) and high == pytest.approx(0.50984, abs=1e-4)
    low, high = wilson_interval(0, 20)  # closed form for 0 successes: [0, z^2 / (n + z^2)]
    assert low == 0.0 and high == pytest.approx(1.959964**2 / (20 + 1.959964**2), abs=1e-6)
    assert all(np.isnan(wilson_interval(0, 0)))


def test_reliability_table_counts_and_intervals_per_bin() -> None:
    y = np.array([0, 1, 0, 0, 1, 1, np.nan])
    p = np.array([0.05, 0.05, 0.12, 0.18, 0.95, 1.0, 0.5])
    rows = reliability_table(y, p, bins=10)
    assert [(r["low"], r["count"]) for r in rows] == [(0.0, 2), (pytest.approx(0.1), 2), (pytest.approx(0.9), 2)]
    first, second, last = rows
    assert first["observed"] == 0.5 and first["predicted"] == pytest.approx(0.05)
    assert (first["observed_low"], first["observed_high"]) == pytest.approx(wilson_interval(1, 2))
    assert second["observed"] == 0.0 and second["observed_high"] == pytest.approx(wilson_interval(0, 2)[1])
    assert last["observed"] == 1.0 and last["predicted"] == pytest.approx(0.975)
    assert all(r["observed_low"] <= r["observed"] <= r["observed_high"] for r in rows)


# ---- thresholds


def test_threshold_treats_tied_probabilities_as_one_decision() -> None:
    y = np.array([1.0, 0.0, 0.0, 1.0])
    p = np.array([0.9, 0.9, 0.9, 0.1])
    # "p >= 0.9" flags all three ties (F1 0.4); "p >= 0.1" flags all four (F1 2/3): 0.1 is the best cut
    assert best_f1_threshold(y, p) == 0.1
    assert f1_score(y, p >= best_f1_threshold(y, p)) == pytest.approx(brute_force_best_f1(y, p))


# ---- per-label calibration


def _overconfident(n: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < sigmoid(true)).astype(float)
    return true * scale, y


def _stepped(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits whose true probability is a step (0.2 below 0, 0.9 above) that no temperature can fit."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    truth = np.where(z < 0, 0.2, 0.9)
    return z, (rng.random(n) < truth).astype(float), truth


def test_temperature_is_chosen_for_scaled_logits_and_recovers_the_scale() -> None:
    z, y = _overconfident(3000, 3.0, seed=1)
    calibration, scores = fit_label(z, y)
    assert calibration.method == "temperature"
    assert scores["temperature"] < scores["isotonic"]
    assert 2.6 < calibration.temperature < 3.4


def test_isotonic_is_chosen_for_a_shape_no_temperature_fits_and_stays_inside_0_1() -> None:
    z, y, truth = _stepped(3000, seed=2)
    calibration, scores = fit_label(z, y)
    assert calibration.method == "isotonic"
    assert scores["isotonic"] < scores["temperature"]
    grid = np.array([-4.0, -1.0, 1.0, 4.0])
    assert calibration.apply(grid) == pytest.approx([0.2, 0.2, 0.9, 0.9], abs=0.05)
    extreme = calibration.apply(np.array([-1e6, 1e6]))
    assert 0 < extreme[0] and extreme[1] < 1  # never exactly 0 or 1, even far outside the validation logits
    assert extreme[0] >= 1 / (len(y) + 2) - 1e-12 and extreme[1] <= 1 - 1 / (len(y) + 2) + 1e-12


def test_fitted_thresholds_are_f1_optimal_on_the_calibrated_probability() -> None:
    z1, y1 = _overconfident(600, 3.0, seed=3)
    z2, y2, _ = _stepped(600, seed=4)
    logits = np.stack([z1, z2], axis=1)
    labels = np.stack([y1, y2], axis=1)
    labels[::7, 0] = np.nan  # unknown labels are left out
    calibration = fit_calibration_to_logits(logits, labels, ["a", "b"])
    assert calibration.methods == {"a": "temperature", "b": "isotonic"}
    probs = calibration.probabilities(logits)
    for k in range(2):
        keep = ~np.isnan(labels[:, k])
        y, p = labels[keep, k], probs[keep, k]
        decided = f1_score(y.astype(int), p >= calibration.thresholds[k])
        # the F1 of the stored decision is the best any cut of the calibrated probability achieves ...
        assert decided == pytest.approx(brute_force_best_f1(y, p), abs=1e-12)
        # ... and the threshold is a calibrated probability, not a value of the uncalibrated sigmoid
        assert np.any(np.isclose(p, calibration.thresholds[k]))
    raw_threshold = best_f1_threshold(labels[:, 0], sigmoid(logits[:, 0]))
    assert abs(raw_threshold - calibration.thresholds[0]) > 0.01  # a sigmoid-fitted threshold would be caught


def test_a_label_with_one_class_is_left_uncalibrated_and_tiny_classes_get_a_temperature() -> None:
    z = np.linspace(-2, 2, 40)
    calibration, _ = fit_label(z, np.zeros(40))
    assert (calibration.method, calibration.temperature) == ("temperature", 1.0)
    y = np.zeros(40)
    y[-3:] = 1  # three positives: too few for an isotonic map
    assert fit_label(z, y)[0].method == "temperature"


def test_config_round_trip_and_an_older_single_temperature_config() -> None:
    z, y, _ = _stepped(400, seed=5)
    z2, y2 = _overconfident(400, 2.0, seed=6)
    logits, labels = np.stack([z, z2], 1), np.stack([y, y2], 1)
    fitted = fit_calibration_to_logits(logits, labels, ["a", "b"])
    again = Calibration.from_config(json.loads(json.dumps(fitted.to_config())), ["a", "b"])
    assert np.array_equal(again.probabilities(logits), fitted.probabilities(logits))
    assert np.array_equal(again.thresholds, fitted.thresholds)
    legacy = Calibration.from_config({"temperature": 2.0, "thresholds": {"a": 0.3}}, ["a", "b"])
    assert np.allclose(legacy.probabilities(logits), 1 / (1 + np.exp(-logits / 2.0)))
    assert list(legacy.thresholds) == [0.3, 0.5]
    assert np.allclose(Calibration.from_config(None, ["a"]).probabilities(np.array([[0.7]])), sigmoid(np.array([[0.7]])))


def test_label_calibration_refuses_malformed_maps() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        LabelCalibration("isotonic", knots_logit=[0.0, 1.0], knots_probability=[0.0, 0.5])
    with pytest.raises(ValueError, match="increasing"):
        LabelCalibration("isotonic", knots_logit=[1.0, 0.0], knots_probability=[0.2, 0.5])
    with pytest.raises(ValueError, match="positive"):
        LabelCalibration("temperature", temperature=0.0)
    with pytest.raises(ValueError, match="expected one of"):
        LabelCalibration("platt")


def test_uploaded_config_with_a_bad_per_label_calibration_is_refused(demo_checkpoint) -> None:
    config = json.loads((demo_checkpoint / "config.json").read_text())
    assert not check_config(config)
    label = config["model"]["labels"][0]
    config["calibration"]["per_label"][label] = {"method": "isotonic", "knots_logit": [0, 1], "knots_probability": [0.5, 1.0]}
    config["calibration"]["per_label"]["no such label"] = {"method": "temperature", "temperature": 1.0}
    fields = {p.field for p in check_config(config)}
    assert f"calibration.per_label.{label}" in fields and "calibration.per_label.no such label" in fields
