"""The evaluation report: discrimination, thresholds and calibration fitted on validation and
applied on test, bootstrap intervals, and the same figures with each modality withheld.

Calibration is reported where it is read: ECE pooled and per label (before and after the per-label
calibration), and reliability tables (pooled and per label) whose bins carry their count and a 95%
Wilson interval of the observed frequency, so a bin of five patients is not read like one of five hundred.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medfuse_core.features.batch import Batch, PatientFeatures
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import MODALITIES
from medfuse_core.runtime.calibration import Calibration, calibrated_probability, sigmoid
from medfuse_core.train.calibrate import fit_calibration_to_logits
from medfuse_core.train.loop import predict_logits
from medfuse_core.train.metrics import (
    bootstrap_macro,
    expected_calibration_error,
    label_metrics,
    macro,
    micro_f1,
    wilson_interval,
)

MORTALITY = "In-hospital mortality"


def _labels(features: list[PatientFeatures]) -> np.ndarray:
    return np.stack([f.labels for f in features]).astype(np.float64)


def fit_calibration(model: MedFuseLens, val_set: list[PatientFeatures]) -> dict[str, Any]:
    """Per-label calibration (temperature or isotonic, chosen on validation) and per-label F1-optimal
    thresholds on the calibrated probability, from validation; config.json's `calibration`."""
    logits = predict_logits(model, val_set)
    return fit_calibration_to_logits(logits, _labels(val_set), model.labels).to_config()


def _scores(labels: np.ndarray, probs: np.ndarray, names: list[str], thresholds: np.ndarray) -> dict[str, Any]:
    per_label = {name: label_metrics(labels[:, k], probs[:, k], float(thresholds[k])).__dict__ for k, name in enumerate(names)}
    diseases = [k for k, name in enumerate(names) if name != MORTALITY]
    out = {
        "n_patients": int(labels.shape[0]),
        "macro_auroc": macro([per_label[names[k]]["auroc"] for k in diseases]),
        "macro_auprc": macro([per_label[names[k]]["auprc"] for k in diseases]),
        "micro_f1": micro_f1(labels[:, diseases], probs[:, diseases], thresholds[diseases]) if diseases else float("nan"),
        "per_label": per_label,
    }
    if MORTALITY in names:
        m = per_label[MORTALITY]
        out["mortality"] = {"auroc": m["auroc"], "auprc": m["auprc"]}
    return out


def evaluate(model: MedFuseLens, test_set: list[PatientFeatures], calibration: dict[str, Any] | None,
             bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """The full report on `test_set` with the calibration fitted on validation."""
    names = model.labels
    labels = _labels(test_set)
    calibrator = Calibration.from_config(calibration, names)
    thresholds = calibrator.thresholds
    logits = predict_logits(model, test_set)
    raw = sigmoid(logits)
    calibrated = calibrated_probability(logits, calibrator)
    report = _scores(labels, calibrated, names, thresholds)
    diseases = [k for k, name in enumerate(names) if name != MORTALITY]
    report["ci95"] = bootstrap_macro(labels[:, diseases], calibrated[:, diseases], n_resamples=bootstrap, seed=seed)
    report["ece"] = {
        "uncalibrated": expected_calibration_error(labels, raw),
        "calibrated": expected_calibration_error(labels, calibrated),
        "bins": ECE_BINS,
        "methods": calibrator.methods,
        "per_label": {name: {"uncalibrated": expected_calibration_error(labels[:, k], raw[:, k]),
                             "calibrated": expected_calibration_error(labels[:, k], calibrated[:, k])}
                      for k, name in enumerate(names)},
    }
    report["subsets"] = _subsets(model, test_set, labels, names, calibrator)
    report["reliability"] = reliability_table(labels, calibrated)
    report["reliability_per_label"] = {name: reliability_table(labels[:, k], calibrated[:, k])
                                       for k, name in enumerate(names)}
    return report


ECE_BINS = 15  # expected_calibration_error's default, said in the report


def _subsets(model: MedFuseLens, test_set: list[PatientFeatures], labels: np.ndarray, names: list[str],
             calibrator: Calibration) -> dict[str, Any]:
    """`all_present`: patients with all four modalities; `without:<m>`: every test patient with m withheld."""
    subsets: dict[str, Any] = {}
    complete = [i for i, f in enumerate(test_set) if f.present.all()]
    if complete:
        logits = predict_logits(model, [test_set[i] for i in complete])
        subsets["all_present"] = _scores(labels[complete], calibrated_probability(logits, calibrator), names, calibrator.thresholds)
    for index, modality in enumerate(MODALITIES):
        def withhold(batch: Batch, index: int = index) -> torch.Tensor:
            present = batch.present.clone()
            present[:, index] = False
            return present

        logits = predict_logits(model, test_set, present_override=withhold)
        subsets[f"without:{modality}"] = _scores(labels, calibrated_probability(logits, calibrator), names, calibrator.thresholds)
    return subsets


def reliability_table(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per probability bin [low, high) (the last one closed): mean predicted, observed frequency, count and
    the observed frequency's 95% Wilson interval (for the reliability diagram). Empty bins are left out."""
    keep = ~np.isnan(labels)
    y, p = labels[keep], probs[keep]
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for b in range(bins):
        inside = (p >= edges[b]) & ((p < edges[b + 1]) if b < bins - 1 else (p <= 1))
        if inside.any():
            n, positives = int(inside.sum()), int(y[inside].sum())
            low, high = wilson_interval(positives, n)
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "predicted": float(p[inside].mean()),
                         "observed": positives / n, "count": n, "observed_low": low, "observed_high": high})
    return rows
