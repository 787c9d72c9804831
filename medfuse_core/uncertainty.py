"""An interval beside every probability: split-conformal, per label, wider where the model knows less.

The interval of label k for a patient seen through g modalities is [p - q_kg, p + q_kg] clipped to [0, 1],
p the calibrated probability and q_kg the conformal quantile of |y - p| over validation patients seen
through g modalities (Mondrian conformal prediction, the group being how many modalities the model
used). It is a prediction interval for the outcome: with probability at least `level` (over patients
like the validation ones), the interval reaches the true outcome (1 if it reaches 1 for a positive,
0 for a negative). Equivalently, its ends say which outcomes cannot be excluded: an interval reaching
both 0 and 1 excludes neither; one straddling the decision threshold is an "uncertain" decision.

Why grouped by the number of modalities: a patient with one modality is where the model knows least
(issue 17: a labs-only patient showed Pneumonia 100 %, range 100-100 %); pooled with four-modality
patients, whose errors are tiny, its quantile would be far too narrow. The validation patients are
also seen with modalities withheld (every non-empty subset of the ones they have), so every group has
enough of them; benchmarks/uncertainty.py measures the coverage on held-out patients as they come.

A group with too few validation rows for the level (n < 1/(1 - level) - 1) gets q = 1: the interval
[0, 1], honest about knowing nothing. Fitting is in train/conformal_fit.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

MAX_MODALITIES = 4


@dataclass
class ConformalIntervals:
    """Per label and per number of modalities used (1..4): the half-width q of the interval."""

    labels: list[str]
    level: float  # e.g. 0.9
    half_width: np.ndarray  # (K, MAX_MODALITIES): column g - 1 for patients seen through g modalities
    calibration_rows: np.ndarray  # (K, MAX_MODALITIES) validation rows behind each q
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def intervals(self, probabilities: np.ndarray, n_modalities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (N, K), for calibrated probabilities (N, K) of patients seen through
        `n_modalities` (N,) modalities (0 -> the whole [0, 1])."""
        p = np.asarray(probabilities, dtype=np.float64)
        groups = np.asarray(n_modalities, dtype=int)
        q = np.ones_like(p)
        seen = (groups >= 1) & (groups <= MAX_MODALITIES)
        q[seen] = self.half_width[:, groups[seen] - 1].T
        return np.clip(p - q, 0.0, 1.0), np.clip(p + q, 0.0, 1.0)

    def to_config(self) -> dict[str, Any]:
        return {"method": "mondrian_split_conformal_abs_residual", "level": self.level,
                "half_width": {name: [float(v) for v in self.half_width[k]] for k, name in enumerate(self.labels)},
                "calibration_rows": {name: [int(v) for v in self.calibration_rows[k]] for k, name in enumerate(self.labels)},
                "fitted_on": self.fitted_on}

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, labels: Sequence[str]) -> "ConformalIntervals | None":
        """None when the checkpoint has no fitted intervals (every result then says so)."""
        if not config or config.get("method") != "mondrian_split_conformal_abs_residual":
            return None
        widths = config.get("half_width") or {}
        rows = config.get("calibration_rows") or {}
        if any(name not in widths for name in labels):
            return None
        half_width = np.array([[float(v) for v in widths[name]] for name in labels], dtype=np.float64)
        counts = np.array([[int(v) for v in rows.get(name, [0] * MAX_MODALITIES)] for name in labels])
        if half_width.shape != (len(labels), MAX_MODALITIES) or not np.all((half_width >= 0) & (half_width <= 1)):
            raise ValueError(f"uncertainty.half_width: expected {MAX_MODALITIES} numbers from 0 to 1 per label")
        return cls(list(labels), float(config.get("level", 0.9)), half_width, counts, dict(config.get("fitted_on") or {}))


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) level)-th smallest score; 1.0 (no information)
    when n is too small for that rank to exist."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    rank = int(np.ceil((n + 1) * level))
    return float(scores[rank - 1]) if 1 <= rank <= n else 1.0
