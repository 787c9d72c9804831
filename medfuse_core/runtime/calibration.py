"""The calibrated probability, written once: the checkpoint's per-label calibration of the logit.

Every consumer (predictor, review scores, explanations, evaluation) calls `calibrated_probability`
with the checkpoint's `Calibration`, so the dashboard, the CLI and the reports cannot disagree on a number.

Why per label and why a choice: one temperature for all labels (the previous release) left the
reliability diagram far from the diagonal for some labels while the pooled ECE looked small, because
labels differ in how over- or under-confident the network is. Each label gets either its own
temperature, sigmoid(logit / T_k), or an isotonic map (monotone, piecewise linear in the logit), the
one with the lower out-of-fold log-loss on the validation patients (stratified K folds), then refitted
on all of them. The isotonic map is kept strictly inside (0, 1) (1 / (n + 2) from either end, n the
validation patients with that label known): from a few hundred patients no probability of exactly
0 or 1 is supported. Fitting is in train/calibrate.py, which also fits the decision thresholds on the
calibrated probability, so that "probability >= threshold" is the decision chosen on validation.

A config written by an older release holds only {"temperature", "thresholds"}: `Calibration.from_config`
reads it as one temperature for every label, so old checkpoints give the same numbers as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

LOGIT_CLIP = 60.0  # exp(60) is finite in float64; beyond it the probability is 0 or 1 to float precision


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float64, clipped so it never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -LOGIT_CLIP, LOGIT_CLIP)))


METHODS = ("temperature", "isotonic")


@dataclass
class LabelCalibration:
    """One label's map from logit to probability."""

    method: str = "temperature"
    temperature: float = 1.0
    knots_logit: list[float] = field(default_factory=list)  # isotonic: increasing logits ...
    knots_probability: list[float] = field(default_factory=list)  # ... and their probabilities (non-decreasing)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method: expected one of {', '.join(METHODS)}, found {self.method!r}")
        if self.method == "temperature" and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"calibration temperature: expected a positive number, found {self.temperature!r}")
        if self.method == "isotonic":
            x, y = np.asarray(self.knots_logit, float), np.asarray(self.knots_probability, float)
            if len(x) == 0 or len(x) != len(y) or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                raise ValueError("isotonic calibration: expected as many finite knot probabilities as knot logits")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) or y.min() <= 0 or y.max() >= 1:
                raise ValueError("isotonic calibration: expected increasing logits and non-decreasing probabilities "
                                 "strictly between 0 and 1")

    def apply(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "temperature":
            return sigmoid(z / self.temperature)
        # linear between knots, constant beyond the ends (np.interp clamps)
        return np.interp(z, self.knots_logit, self.knots_probability)

    def to_dict(self) -> dict[str, Any]:
        if self.method == "temperature":
            return {"method": "temperature", "temperature": float(self.temperature)}
        return {"method": "isotonic", "knots_logit": [float(v) for v in self.knots_logit],
                "knots_probability": [float(v) for v in self.knots_probability]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelCalibration":
        method = data.get("method", "temperature")
        if method == "temperature":
            return cls("temperature", float(data.get("temperature", 1.0)))
        return cls(method, knots_logit=list(data.get("knots_logit") or []),
                   knots_probability=list(data.get("knots_probability") or []))


@dataclass
class Calibration:
    """Every label's calibration and decision threshold (on the calibrated probability)."""

    labels: list[str]
    per_label: list[LabelCalibration]
    thresholds: np.ndarray  # (K,)
    selection: dict[str, Any] = field(default_factory=dict)  # label -> out-of-fold log-loss per method, n

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, same shape as `logits` (..., K)."""
        z = np.asarray(logits, dtype=np.float64)
        out = np.empty_like(z)
        for k, label in enumerate(self.per_label):
            out[..., k] = label.apply(z[..., k])
        return out

    def positive(self, logits: np.ndarray) -> np.ndarray:
        return self.probabilities(logits) >= self.thresholds

    @property
    def methods(self) -> dict[str, str]:
        return {name: c.method for name, c in zip(self.labels, self.per_label)}

    # ---- config.json

    def to_config(self) -> dict[str, Any]:
        return {
            "per_label": {name: c.to_dict() for name, c in zip(self.labels, self.per_label)},
            "thresholds": {name: float(t) for name, t in zip(self.labels, self.thresholds)},
            "selection": self.selection,
        }

    @classmethod
    def from_config(cls, calibration: dict[str, Any] | None, names: Sequence[str]) -> "Calibration":
        """From config.json's `calibration`; an older one ({"temperature", "thresholds"}) as one temperature
        for every label; none at all as the plain sigmoid with thresholds 0.5."""
        calibration = calibration or {}
        per_label_config = calibration.get("per_label") or {}
        shared = float(calibration.get("temperature", 1.0))
        thresholds = calibration.get("thresholds") or {}
        per_label = [LabelCalibration.from_dict(per_label_config[n]) if n in per_label_config
                     else LabelCalibration("temperature", shared) for n in names]
        return cls(list(names), per_label, np.array([float(thresholds.get(n, 0.5)) for n in names], dtype=np.float64),
                   dict(calibration.get("selection") or {}))


def calibrated_probability(logits: np.ndarray | float, calibration: "Calibration | float" = 1.0) -> np.ndarray:
    """The calibrated probability, float64, same shape as `logits` (..., K): the checkpoint's per-label
    `Calibration`, or sigmoid(logit / temperature) for a plain temperature."""
    if isinstance(calibration, Calibration):
        return calibration.probabilities(logits)
    return sigmoid(np.asarray(logits, dtype=np.float64) / float(calibration))
