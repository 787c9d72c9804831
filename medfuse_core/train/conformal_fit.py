"""Fitting the conformal intervals (medfuse_core/uncertainty.py) on validation patients.

Per label, number of modalities used and outcome (medfuse_core/uncertainty.py says why by outcome).
Every validation patient is seen through every non-empty subset of the modalities it has (the frozen
encoders run once; only the fusion head runs per subset), so that the one- and two-modality groups
have enough rows. Scores are |y - p| with p the checkpoint's calibrated probability; the calibration
must not have been fitted on these patients (use a cohort other than the one it was fitted on), or the
scores are optimistic and the intervals too narrow.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from medfuse_core.runtime.calibration import Calibration
from medfuse_core.features.batch import PatientFeatures
from medfuse_core.record import MODALITIES
from medfuse_core.train.loop import EncodedSet
from medfuse_core.runtime.uncertainty import MAX_MODALITIES, ConformalIntervals, conformal_quantile

DEFAULT_LEVEL = 0.9
SUBSETS = [np.array([m in chosen for m in range(len(MODALITIES))])
           for size in range(1, len(MODALITIES) + 1) for chosen in itertools.combinations(range(len(MODALITIES)), size)]


@torch.inference_mode()
def subset_logits(model: torch.nn.Module, patients: list[PatientFeatures], batch_size: int = 128
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits (R, K), patient index (R,), modalities used (R,)): one row per patient and non-empty
    subset of the modalities it has."""
    device = next(model.parameters()).device
    encoded = EncodedSet.build(model, patients, batch_size, device)
    present = encoded.present.cpu().numpy().astype(bool)
    logits, index, used = [], [], []
    model.eval()
    for subset in SUBSETS:
        rows = np.flatnonzero((present & subset).sum(1) == subset.sum())  # patients that have the whole subset
        if not len(rows):
            continue
        mask = torch.tensor(np.broadcast_to(subset, (len(rows), len(subset))).copy(), device=device)
        features = {m: v[torch.as_tensor(rows, device=device)] for m, v in encoded.features.items()}
        logits.append(model.forward_features(features, mask).logits.float().cpu().numpy())
        index.append(rows)
        used.append(np.full(len(rows), int(subset.sum())))
    return np.concatenate(logits), np.concatenate(index), np.concatenate(used)


def fit_intervals(probabilities: np.ndarray, labels: np.ndarray, n_modalities: np.ndarray, names: list[str],
                  level: float = DEFAULT_LEVEL) -> ConformalIntervals:
    """Per label and group, from calibrated probabilities (R, K), outcomes (R, K; NaN unknown) and the
    number of modalities behind each row (R,): `up` from the positives' 1 - p, `down` from the negatives' p."""
    up = np.ones((len(names), MAX_MODALITIES))
    down = np.ones((len(names), MAX_MODALITIES))
    rows = np.zeros((len(names), MAX_MODALITIES, 2), dtype=int)
    for k in range(len(names)):
        for g in range(1, MAX_MODALITIES + 1):
            group = n_modalities == g
            negatives, positives = group & (labels[:, k] == 0), group & (labels[:, k] == 1)
            rows[k, g - 1] = [int(negatives.sum()), int(positives.sum())]
            down[k, g - 1] = conformal_quantile(probabilities[negatives, k], level)
            up[k, g - 1] = conformal_quantile(1.0 - probabilities[positives, k], level)
    return ConformalIntervals(list(names), level, up, down, rows)


def fit_checkpoint_intervals(model: torch.nn.Module, calibration: Calibration, patients: list[PatientFeatures],
                             level: float = DEFAULT_LEVEL) -> ConformalIntervals:
    logits, index, used = subset_logits(model, patients)
    labels = np.stack([p.labels for p in patients]).astype(np.float64)[index]
    return fit_intervals(calibration.probabilities(logits), labels, used, calibration.labels, level)
