"""The evaluation report: discrimination, thresholds and calibration fitted on validation and
applied on test, bootstrap intervals, and the same figures with each modality withheld.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medfuse_core.features.batch import Batch, PatientFeatures
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import MODALITIES
from medfuse_core.runtime.calibration import calibrated_probability
from medfuse_core.train.loop import predict_logits
from medfuse_core.train.metrics import (
    best_f1_threshold,
    bootstrap_macro,
    expected_calibration_error,
    fit_temperature,
    label_metrics,
    macro,
    micro_f1,
)

MORTALITY = "In-hospital mortality"


def _labels(features: list[PatientFeatures]) -> np.ndarray:
    return np.stack([f.labels for f in features]).astype(np.float64)


def fit_calibration(model: MedFuseLens, val_set: list[PatientFeatures]) -> dict[str, Any]:
    """Temperature (one for all labels) and per-label F1-optimal thresholds, from validation."""
    logits = predict_logits(model, val_set)
    labels = _labels(val_set)
    temperature = fit_temperature(logits, labels)
    probs = calibrated_probability(logits, temperature)
    thresholds = [best_f1_threshold(labels[:, k], probs[:, k]) for k in range(labels.shape[1])]
    return {"temperature": temperature, "thresholds": dict(zip(model.labels, thresholds))}


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


def evaluate(model: MedFuseLens, test_set: list[PatientFeatures], calibration: dict[str, Any],
             bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """The full report on `test_set` with the calibration fitted on validation."""
    names = model.labels
    labels = _labels(test_set)
    temperature = float(calibration["temperature"])
    thresholds = np.array([calibration["thresholds"][n] for n in names])
    logits = predict_logits(model, test_set)
    raw = calibrated_probability(logits)
    calibrated = calibrated_probability(logits, temperature)
    report = _scores(labels, calibrated, names, thresholds)
    diseases = [k for k, name in enumerate(names) if name != MORTALITY]
    report["ci95"] = bootstrap_macro(labels[:, diseases], calibrated[:, diseases], n_resamples=bootstrap, seed=seed)
    report["ece"] = {"before_scaling": expected_calibration_error(labels, raw),
                     "after_scaling": expected_calibration_error(labels, calibrated), "temperature": temperature}
    report["subsets"] = _subsets(model, test_set, labels, names, thresholds, temperature)
    report["reliability"] = reliability_table(labels, calibrated)
    return report


def _subsets(model: MedFuseLens, test_set: list[PatientFeatures], labels: np.ndarray, names: list[str],
             thresholds: np.ndarray, temperature: float) -> dict[str, Any]:
    """`all_present`: patients with all four modalities; `without:<m>`: every test patient with m withheld."""
    subsets: dict[str, Any] = {}
    complete = [i for i, f in enumerate(test_set) if f.present.all()]
    if complete:
        logits = predict_logits(model, [test_set[i] for i in complete])
        subsets["all_present"] = _scores(labels[complete], calibrated_probability(logits, temperature), names, thresholds)
    for index, modality in enumerate(getattr(model, "modalities", MODALITIES)):
        def withhold(batch: Batch, index: int = index) -> torch.Tensor:
            present = batch.present.clone()
            present[:, index] = False
            return present

        logits = predict_logits(model, test_set, present_override=withhold)
        subsets[f"without:{modality}"] = _scores(labels, calibrated_probability(logits, temperature), names, thresholds)
    return subsets


def reliability_table(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per probability bin: mean predicted, observed frequency, count (for the reliability diagram)."""
    keep = ~np.isnan(labels)
    y, p = labels[keep], probs[keep]
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for b in range(bins):
        inside = (p >= edges[b]) & ((p < edges[b + 1]) if b < bins - 1 else (p <= 1))
        if inside.any():
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "predicted": float(p[inside].mean()),
                         "observed": float(y[inside].mean()), "count": int(inside.sum())})
    return rows
