"""Evaluation metrics against hand-computed values and known behaviour."""

from __future__ import annotations

import numpy as np

from medfuse_core.runtime.calibration import sigmoid
from medfuse_core.train.metrics import (
    auroc,
    best_f1_threshold,
    bootstrap_macro,
    expected_calibration_error,
    fit_temperature,
)


def test_auroc_ignores_unknown_labels_and_single_class() -> None:
    y = np.array([0, 0, 1, 1, np.nan])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.99])
    assert auroc(y, p) == 0.75
    assert np.isnan(auroc(np.array([1.0, 1.0]), np.array([0.2, 0.3])))


def test_best_threshold_maximises_f1() -> None:
    y = np.array([0, 0, 1, 1, 1, 0], dtype=float)
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.9, 0.65])
    assert best_f1_threshold(y, p) == 0.6


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, size=(4000, 2))
    y = (rng.random((4000, 2)) < sigmoid(true_logits)).astype(float)
    t = fit_temperature(true_logits * 3.0, y)  # three times overconfident
    assert 2.6 < t < 3.4
    flat = np.full((200, 1), 0.01) + rng.normal(0, 1e-3, (200, 1))  # near-constant logits must not blow up
    t_flat = fit_temperature(flat, (rng.random((200, 1)) < 0.3).astype(float))
    assert 0.05 <= t_flat <= 20.0  # clamped, not run off to infinity


def test_ece_is_zero_for_calibrated_bins_and_large_for_confident_errors() -> None:
    y = np.array([1, 0, 1, 0], dtype=float)
    assert expected_calibration_error(y, np.full(4, 0.5)) == 0.0
    assert expected_calibration_error(1 - y, np.array([0.99, 0.01, 0.99, 0.01])) > 0.9


def test_bootstrap_interval_contains_the_point_estimate() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((300, 3)) < 0.3).astype(float)
    p = np.clip(y * 0.4 + rng.random((300, 3)) * 0.6, 0, 1)
    ci = bootstrap_macro(y, p, n_resamples=100, seed=0)
    point = np.mean([auroc(y[:, k], p[:, k]) for k in range(3)])
    assert ci["macro_auroc"][0] < point < ci["macro_auroc"][1]
