"""Fitting the per-label calibration (medfuse_core/calibration.py) on validation logits and labels.

Per label, each method's out-of-fold log-loss over stratified folds of the validation patients decides
(temperature or isotonic); the winner is refitted on all of them, and the F1-optimal decision threshold
is then chosen on the *calibrated* probability.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.isotonic import IsotonicRegression

from medfuse_core.runtime.calibration import METHODS, Calibration, LabelCalibration
from medfuse_core.train.metrics import best_f1_threshold, fit_temperature

DEFAULT_FOLDS = 5
MIN_PER_CLASS_FOR_ISOTONIC = 5  # fewer positives (or negatives) than this: temperature only


def fit_calibration_to_logits(logits: np.ndarray, labels: np.ndarray, names: Sequence[str], folds: int = DEFAULT_FOLDS,
                              seed: int = 0, methods: Sequence[str] = METHODS) -> Calibration:
    """Per label: the method with the lower out-of-fold log-loss, refitted on every known label;
    then the F1-optimal threshold on the calibrated probability. `labels` may hold NaN (unknown)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    per_label, thresholds, selection = [], [], {}
    for k, name in enumerate(names):
        keep = ~np.isnan(labels[:, k])
        z, y = logits[keep, k], labels[keep, k]
        calibration, scores = fit_label(z, y, folds=folds, seed=seed, methods=methods)
        per_label.append(calibration)
        thresholds.append(best_f1_threshold(y, calibration.apply(z)))
        selection[name] = {"n": int(keep.sum()), "positives": int(y.sum()), "out_of_fold_log_loss": scores,
                           "chosen": calibration.method}
    return Calibration(list(names), per_label, np.asarray(thresholds, dtype=np.float64), selection)



def fit_isotonic(z: np.ndarray, y: np.ndarray) -> LabelCalibration:
    """Isotonic map from logit to probability, kept 1 / (n + 2) away from 0 and 1."""
    margin = 1.0 / (len(y) + 2)
    iso = IsotonicRegression(y_min=margin, y_max=1 - margin, increasing=True, out_of_bounds="clip").fit(z, y)
    return LabelCalibration("isotonic", knots_logit=iso.X_thresholds_.tolist(), knots_probability=iso.y_thresholds_.tolist())


def fit_method(method: str, z: np.ndarray, y: np.ndarray) -> LabelCalibration:
    if method == "temperature":
        return LabelCalibration("temperature", fit_temperature(z, y))
    if method == "isotonic":
        return fit_isotonic(z, y)
    raise ValueError(f"calibration method: expected one of {', '.join(METHODS)}, found {method!r}")


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per row, positives and negatives each spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    for value in (0, 1):
        rows = np.flatnonzero(y == value)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return fold


def fit_label(z: np.ndarray, y: np.ndarray, folds: int = DEFAULT_FOLDS, seed: int = 0,
              methods: Sequence[str] = METHODS) -> tuple[LabelCalibration, dict[str, float]]:
    """One label: out-of-fold log-loss of each method, the best refitted on all rows.

    A label with fewer than MIN_PER_CLASS_FOR_ISOTONIC positives or negatives gets a temperature (an
    isotonic map from a handful of one class is a step function of noise); with one class or no rows
    at all, the identity (temperature 1)."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return LabelCalibration("temperature", 1.0), {}
    candidates = [m for m in methods if m != "isotonic" or min(n_pos, n_neg) >= MIN_PER_CLASS_FOR_ISOTONIC]
    if len(candidates) == 1:
        return fit_method(candidates[0], z, y), {}
    k = max(2, min(folds, n_pos, n_neg))
    fold = stratified_folds(y, k, seed)
    scores: dict[str, float] = {}
    for method in candidates:
        predicted = np.empty(len(y))
        for f in range(k):
            test = fold == f
            predicted[test] = fit_method(method, z[~test], y[~test]).apply(z[test])
        scores[method] = log_loss(y, predicted)
    best = min(candidates, key=lambda m: (scores[m], candidates.index(m)))
    return fit_method(best, z, y), scores
