"""Group contributions carried from the logit to the probability a clinician reads.

The exact Shapley values of the fusion tokens add up on the logit: base + sum(c_i) == logit. A
clinician reads a calibrated probability, sigmoid(logit / T), on which those values do not add up.
This gives each token's Shapley value of the game v(S) = sigmoid((base + sum_{i in S} c_i) / T):
the values add up exactly to p(patient) - p(no data), so "labs raised the risk by 23 points" and
the other sources' points sum to the change from the no-data risk to this patient's.

With the demo's additive fusion head a coalition's logit is exactly base + sum_{i in S} c_i, so
v(S) is the calibrated probability the model gives with only the tokens of S: these are then the
exact Shapley values of the probability. With a head where tokens interact, they are the logit
Shapley values carried to the probability scale through that additive game (documented, not exact).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def _calibrated(logit: float, temperature: Any) -> float:
    """The label's calibrated probability of `logit`: its calibration map (runtime/calibration.py's
    LabelCalibration, per label), or sigmoid(logit / temperature) for a plain temperature."""
    if hasattr(temperature, "apply"):
        return float(temperature.apply(np.array([float(logit)]))[0])
    z = float(logit) / float(temperature)
    return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


def probability_contributions(base: float, contributions: Mapping[str, float], temperature: float) -> dict[str, float]:
    """{token: change of the calibrated probability (0-1 scale)}; they add up to
    sigmoid((base + sum) / T) - sigmoid(base / T). Tokens with a zero contribution get exactly 0."""
    names = list(contributions)
    values = np.array([float(contributions[n]) for n in names], dtype=np.float64)
    n = len(names)
    out = {name: 0.0 for name in names}
    active = [i for i in range(n) if values[i] != 0.0]  # a zero token is a null player: exactly 0
    m = len(active)
    if m == 0:
        return out
    weights = [math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)]
    for pos, i in enumerate(active):
        others = [j for j in active if j != i]
        total = 0.0
        for k in range(m):
            for coalition in itertools.combinations(others, k):
                inside = float(base) + float(values[list(coalition)].sum()) if coalition else float(base)
                total += weights[k] * (_calibrated(inside + values[i], temperature) - _calibrated(inside, temperature))
        out[names[i]] = total
    return out


def no_data_probability(base: float, temperature: float) -> float:
    """The calibrated probability with every token masked: the model's answer with no patient data."""
    return _calibrated(base, temperature)


def risk_points(scores: Any, label: str) -> tuple[float, dict[str, float], float]:
    """(risk with no data, {token name: percentage points it moved this patient's risk}, this patient's
    risk), all in percent, for one label of a `medfuse_core.explain.scores.PatientScores`; the points add
    up exactly to the difference of the two risks."""
    k = scores.index(label)
    calibrations = tuple(getattr(scores, "label_calibrations", ()) or ())
    plain = getattr(scores, "calibration", 1.0)  # a number here is a plain temperature (scores built by hand)
    calibration = calibrations[k] if calibrations else (plain if isinstance(plain, (int, float)) else 1.0)
    shares = probability_contributions(float(scores.base[k]), scores.contributions_for(label), calibration)
    start = 100 * no_data_probability(float(scores.base[k]), calibration)
    points = {name: 100 * v for name, v in shares.items()}
    return start, points, start + sum(points.values())
