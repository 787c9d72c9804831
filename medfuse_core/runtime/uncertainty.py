"""An interval beside every probability: split-conformal, per label, wider where the model knows less.

The interval of label k for a patient seen through g modalities is [p - down_kg, p + up_kg] clipped to
[0, 1], p the calibrated probability. `up_kg` is the conformal quantile of (1 - p) over the validation
*positives* seen through g modalities, `down_kg` that of p over the *negatives* (Mondrian conformal
prediction, by outcome and by how many modalities the model used). It is a prediction interval for the
outcome: a positive's interval reaches 1, and a negative's reaches 0, with probability at least `level`
each (over patients like the validation ones). Its ends therefore say which outcomes cannot be
excluded: an interval reaching both 0 and 1 excludes neither; one straddling the decision threshold is
an "uncertain" decision.

Why by outcome: with a rare label, a quantile of |y - p| pooled over both outcomes sits among the many
easy negatives and stays near 0 even where the model misses most positives (measured on the validation
cohort: Pneumonia, one modality, 0.003). Why by the number of modalities: a patient with one modality is
where the model knows least (issue 17: a labs-only patient showed Pneumonia 100 %, range 100-100 %);
pooled with four-modality patients, whose errors are tiny, its interval would be far too narrow. The
validation patients are also seen with modalities withheld (every non-empty subset of the ones they
have), so every group has enough rows; benchmarks/uncertainty.py measures the coverage on held-out
patients as they come.

A group with too few validation rows of an outcome for the level (n < level / (1 - level)) gets the
whole side (up = 1 or down = 1): honest about knowing nothing. Fitting is in train/conformal_fit.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

MAX_MODALITIES = 4


METHOD = "mondrian_split_conformal_by_outcome"


@dataclass
class ConformalIntervals:
    """Per label and per number of modalities used (1..4): how far the interval reaches up and down."""

    labels: list[str]
    level: float  # e.g. 0.9
    up: np.ndarray  # (K, MAX_MODALITIES): column g - 1 for patients seen through g modalities
    down: np.ndarray  # (K, MAX_MODALITIES)
    calibration_rows: np.ndarray  # (K, MAX_MODALITIES, 2) validation rows behind each: negatives, positives
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def intervals(self, probabilities: np.ndarray, n_modalities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (N, K), for calibrated probabilities (N, K) of patients seen through
        `n_modalities` (N,) modalities (0 -> the whole [0, 1])."""
        p = np.asarray(probabilities, dtype=np.float64)
        groups = np.asarray(n_modalities, dtype=int)
        up, down = np.ones_like(p), np.ones_like(p)
        seen = (groups >= 1) & (groups <= MAX_MODALITIES)
        up[seen] = self.up[:, groups[seen] - 1].T
        down[seen] = self.down[:, groups[seen] - 1].T
        # an end within float rounding of 0 or 1 reaches it (p + (1 - p') with p == p' must reach 1)
        low, high = p - down, p + up
        return np.where(low <= 1e-12, 0.0, np.clip(low, 0.0, 1.0)), np.where(high >= 1 - 1e-12, 1.0, np.clip(high, 0.0, 1.0))

    def to_config(self) -> dict[str, Any]:
        def table(values: np.ndarray, cast=float) -> dict[str, list]:
            return {name: [cast(v) for v in values[k]] for k, name in enumerate(self.labels)}

        return {"method": METHOD, "level": self.level, "up": table(self.up), "down": table(self.down),
                "calibration_rows": {name: [[int(n), int(q)] for n, q in self.calibration_rows[k]]
                                     for k, name in enumerate(self.labels)},
                "fitted_on": self.fitted_on}

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, labels: Sequence[str]) -> "ConformalIntervals | None":
        """None when the checkpoint has no fitted intervals for these labels (every result then says so)."""
        if not config or config.get("method") != METHOD:
            return None
        up, down = config.get("up") or {}, config.get("down") or {}
        if any(name not in up or name not in down for name in labels):
            return None
        arrays = []
        for values in (up, down):
            array = np.array([[float(v) for v in values[name]] for name in labels], dtype=np.float64)
            if array.shape != (len(labels), MAX_MODALITIES) or not np.all((array >= 0) & (array <= 1)):
                raise ValueError(f"uncertainty: expected {MAX_MODALITIES} numbers from 0 to 1 per label in up and down")
            arrays.append(array)
        rows = config.get("calibration_rows") or {}
        counts = np.array([rows.get(name, [[0, 0]] * MAX_MODALITIES) for name in labels], dtype=int)
        return cls(list(labels), float(config.get("level", 0.9)), arrays[0], arrays[1], counts,
                   dict(config.get("fitted_on") or {}))


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) level)-th smallest score; 1.0 (no information)
    when n is too small for that rank to exist."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    rank = int(np.ceil((n + 1) * level))
    return float(scores[rank - 1]) if 1 <= rank <= n else 1.0
