"""The calibrated probability, written once: sigmoid(logit / temperature).

The checkpoint stores one temperature for all labels (fitted on the validation split after training,
train/evaluate.py); every consumer (predictor, review scores, explanations, evaluation) calls
`calibrated_probability`, so the dashboard, the CLI and the reports cannot disagree on a number.
"""

from __future__ import annotations

import numpy as np

LOGIT_CLIP = 60.0  # exp(60) is finite in float64; beyond it the probability is 0 or 1 to float precision


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float64, clipped so it never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -LOGIT_CLIP, LOGIT_CLIP)))


def calibrated_probability(logits: np.ndarray | float, temperature: float = 1.0) -> np.ndarray:
    """sigmoid(logit / temperature), float64, same shape as `logits`."""
    return sigmoid(np.asarray(logits, dtype=np.float64) / float(temperature))
