"""Fitting the conformal intervals (medfuse_core/runtime/uncertainty.py, crepes) on validation patients.

Per label, set of modalities used and outcome (runtime/uncertainty.py says why by outcome, and why on
the model's score before calibration). Every validation patient is seen through every non-empty subset
of the modalities it has (the frozen encoders run once; only the fusion head runs per subset), so that
the one- and two-modality groups have enough rows. These must be patients the network was not trained
on (the project's validation cohort, another cohort than the training one), or the intervals are too
narrow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from medfuse_core.runtime.calibration import Calibration
from medfuse_core.features.batch import PatientFeatures
from medfuse_core.record import MODALITIES
from medfuse_core.train.loop import EncodedSet
from medfuse_core.runtime.uncertainty import MIN_ROWS, SCORE_BINS, ConformalIntervals, group_of, model_scores

DEFAULT_LEVEL = 0.9
SUBSETS = [np.array([m in chosen for m in range(len(MODALITIES))])
           for size in range(1, len(MODALITIES) + 1) for chosen in itertools.combinations(range(len(MODALITIES)), size)]


@torch.inference_mode()
def subset_logits(model: torch.nn.Module, patients: list[PatientFeatures], batch_size: int = 128
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits (R, K), patient index (R,), modalities used (R, M) bool): one row per patient and
    non-empty subset of the modalities it has."""
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
        used.append(np.broadcast_to(subset, (len(rows), len(subset))))
    return np.concatenate(logits), np.concatenate(index), np.concatenate(used)


@dataclass
class SubsetRows:
    """Patients seen through every non-empty subset of the modalities they have: what the intervals are
    fitted on, and what benchmarks measure them on. One row per patient and subset."""

    logits: np.ndarray  # (R, K)
    index: np.ndarray  # (R,) the patient of each row
    used: np.ndarray  # (R, M) bool, the modalities the row was seen through
    outcomes: np.ndarray  # (R, K) 0 / 1, NaN unknown
    natural: np.ndarray  # (R,) bool: the row that is all the patient has (the patient as they come)

    @property
    def scores(self) -> np.ndarray:
        return model_scores(self.logits)

    @property
    def groups(self) -> np.ndarray:
        return group_of(self.used)


def subset_rows(model: torch.nn.Module, patients: list[PatientFeatures]) -> SubsetRows:
    """`subset_logits` with each row's outcomes and whether it is the patient as they come."""
    logits, index, used = subset_logits(model, patients)
    present = np.stack([p.present for p in patients]).astype(bool)[index]
    labels = np.stack([p.labels for p in patients]).astype(np.float64)[index]
    return SubsetRows(logits, index, used, labels, (used == present).all(1))


def coverage_by_label(low: np.ndarray, high: np.ndarray, outcomes: np.ndarray, rows: np.ndarray) -> list[float]:
    """Per label: the share of `rows` (bool, R) with a known outcome whose interval [low, high] holds it
    (NaN when none has one)."""
    out = []
    for k in range(outcomes.shape[1]):
        chosen = rows & ~np.isnan(outcomes[:, k])
        y = outcomes[chosen, k]
        out.append(float(((low[chosen, k] <= y) & (y <= high[chosen, k])).mean()) if chosen.any() else float("nan"))
    return out


def fit_intervals(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, names: list[str],
                  level: float = DEFAULT_LEVEL, calibration: Calibration | None = None,
                  score_bins: int = SCORE_BINS, min_rows: int = MIN_ROWS) -> ConformalIntervals:
    """From the model's scores s (R, K) (probabilities before calibration), outcomes (R, K; NaN unknown)
    and the group of each row (R,; `group_of` its modalities): crepes, Mondrian by label, group and bin of
    the calibrated probability p (`score_bins`, v3; 0: by outcome, v2: `up` from the positives' 1 - p,
    `down` from the negatives' p); `min_rows`: v3's pooling of small categories (runtime/uncertainty.py)."""
    return ConformalIntervals(list(names), level, scores, groups, labels,
                              None if calibration is None else calibration.probabilities, score_bins=score_bins,
                              min_rows=min_rows if score_bins else 0)


def fit_checkpoint_intervals(model: torch.nn.Module, calibration: Calibration, patients: list[PatientFeatures],
                             level: float = DEFAULT_LEVEL, min_rows: int = MIN_ROWS) -> ConformalIntervals:
    rows = subset_rows(model, patients)
    return fit_intervals(rows.scores, rows.outcomes, rows.groups, calibration.labels, level, calibration,
                         min_rows=min_rows)
