"""Scores of a cohort for the dashboard: calibrated predictions, exact group contributions and the
modality-subset range, per patient (numpy only, so the pages can cache and pickle them).

One inference path: each batch of patients is featurised once and encoded once (`encode`); the
prediction, the group contributions (fusion tokens of that output) and the subset range (the head on
subsets of the same encoder outputs) all come from that one encoding. The table and the waterfall chart
therefore show the same logit, and probability = calibrated_probability(logit, temperature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.explain.encoding import Encoding, encode
from medfuse_core.explain.groups import token_contributions
from medfuse_core.explain.subset_range import modality_subset_range
from medfuse_core.features.batch import PatientFeatures, collate
from medfuse_core.models.fusion import TOKEN_NAMES
from medfuse_core.modalities import token_labels
from medfuse_core.record import PatientRecord
from medfuse_core.runtime.calibration import calibrated_probability


@dataclass
class PatientScores:
    """Everything the pages show for one patient and checkpoint (numpy only: cheap to cache and pickle)."""

    patient_id: str
    labels: list[str]
    logits: np.ndarray  # (K,) the model's logit, fp32 forward
    probabilities: np.ndarray  # (K,) calibrated_probability(logit, temperature)
    thresholds: np.ndarray  # (K,) decision thresholds on the calibrated probability
    temperature: float
    present: np.ndarray  # (M,) bool, MODALITIES order
    contributions: np.ndarray  # (K, M + 1) exact Shapley values of the fusion tokens, TOKEN_NAMES order
    base: np.ndarray  # (K,) logit with every token masked (the head's base value)
    subset_low: np.ndarray  # (K,) min calibrated probability over modality subsets
    subset_high: np.ndarray  # (K,) max
    token_names: tuple[str, ...] = TOKEN_NAMES  # the model's fusion tokens, the order of `contributions`

    def index(self, label: str) -> int:
        return self.labels.index(label)

    @property
    def top(self) -> int:
        """Index of the label with the highest calibrated probability."""
        return int(np.argmax(self.probabilities))

    def contributions_for(self, label: str) -> dict[str, float]:
        """{clinician-facing token name: contribution to the logit} for one label."""
        row = self.contributions[self.index(label)]
        names = token_labels(tuple(t.split(":", 1)[1] for t in self.token_names if t.startswith("specific:")))
        return {names[name]: float(v) for name, v in zip(self.token_names, row)}


def score_records(predictor: Any, records: Sequence[PatientRecord], batch_size: int = 64) -> dict[str, PatientScores]:
    """{patient_id: PatientScores} for `records` with a loaded `medfuse_core.predictor.Predictor`.

    A patient with no usable modality is left out (the pages say there is no prediction): the model's
    answer for it would be its prior, not a prediction (see medfuse_core.predictor.NoData)."""
    out: dict[str, PatientScores] = {}
    records = list(records)
    for start in range(0, len(records), batch_size):
        features, _ = predictor.featurize(records[start:start + batch_size])
        usable = [f for f in features if np.asarray(f.present).any()]
        if usable:
            encoding = encode(predictor.model, collate(usable).to(predictor.device))
            out.update(scores_of_encoding(predictor, usable, encoding))
    return out


def scores_of_encoding(predictor: Any, features: Sequence[PatientFeatures], encoding: Encoding) -> dict[str, PatientScores]:
    """PatientScores of the encoded batch `encoding` (rows = `features`); no encoder runs here."""
    model = predictor.model
    temperature = float(predictor.temperature)
    with eval_mode(model):  # the fusion head on the encoded tokens: 2^5 coalitions in one call
        groups = token_contributions(model.fusion, encoding.output.tokens, encoding.output.token_mask, labels=model.labels,
                                     token_names=getattr(model, "token_names", None))
    full = groups.full_logit.double().cpu().numpy()
    empty = groups.empty_logit.double().cpu().numpy()
    values = groups.values.double().cpu().numpy()
    low, high = modality_subset_range(encoding, temperature)
    probabilities = calibrated_probability(full, temperature)
    present = encoding.batch.present.cpu().numpy()
    thresholds = np.asarray(predictor.thresholds, dtype=np.float64)
    return {
        f.patient_id: PatientScores(f.patient_id, list(predictor.labels), full[i], probabilities[i], thresholds,
                                    temperature, present[i], values[i], empty[i], low[i], high[i], tuple(groups.token_names))
        for i, f in enumerate(features)
    }
