"""Scores of a cohort for the dashboard: calibrated predictions, exact group contributions and the
modality-subset range, per patient (numpy only, so the pages can cache and pickle them).

One inference path: each batch of patients is featurised once and encoded once (`encode`); the
prediction, the group contributions (fusion tokens of that output) and the subset range (the head on
subsets of the same encoder outputs) all come from that one encoding. The table and the waterfall chart
therefore show the same logit, and probability = calibrated_probability(logit, the checkpoint's calibration).
The encoding is the prediction path's (`encode_checked`): a modality out of the applicability domain is
left out of the scores as it is of the prediction, and each patient's trust (interval per label, state,
what was left out and why) comes with its scores. A patient whose every modality is out of domain gets
no scores, as a patient without data (the pages say why: `unscored_reasons`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.explain.encoding import Encoding, encode_checked
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
    probabilities: np.ndarray  # (K,) calibrated_probability(logit, calibration)
    thresholds: np.ndarray  # (K,) decision thresholds on the calibrated probability
    calibration: str  # how the probabilities were calibrated, in words (researcher view)
    present: np.ndarray  # (M,) bool, MODALITIES order: the modalities the model used
    contributions: np.ndarray  # (K, M + 1) exact Shapley values of the fusion tokens, TOKEN_NAMES order
    base: np.ndarray  # (K,) logit with every token masked (the head's base value)
    subset_low: np.ndarray  # (K,) min calibrated probability over modality subsets
    subset_high: np.ndarray  # (K,) max
    token_names: tuple[str, ...] = TOKEN_NAMES  # the model's fusion tokens, the order of `contributions`
    interval_low: np.ndarray | None = None  # (K,) conformal interval (runtime/uncertainty.py); None: not fitted
    interval_high: np.ndarray | None = None
    interval_level: float | None = None
    states: tuple[str, ...] = ()  # per label: runtime/trust.py's states
    status: str = "ok"  # the patient's: "out of domain" | "uncertain" | "ok"
    left_out: tuple[str, ...] = ()  # modalities present but left out (out of domain)
    reason: str = ""  # what was left out and why, in plain words
    domain: dict | None = None  # the applicability-domain check (DomainCheck.to_dict)
    label_calibrations: tuple = ()  # per label, the calibration map (runtime/calibration.py LabelCalibration)

    @property
    def needs_review(self) -> bool:
        return self.status != "ok"

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
            encoding = encode_checked(predictor, collate(usable).to(predictor.device))
            out.update(scores_of_encoding(predictor, usable, encoding))
    return out


def scores_of_encoding(predictor: Any, features: Sequence[PatientFeatures], encoding: Encoding) -> dict[str, PatientScores]:
    """PatientScores of the encoded batch `encoding` (rows = `features`); no encoder runs here."""
    model = predictor.model
    calibration = predictor.calibration
    with eval_mode(model):  # the fusion head on the encoded tokens: 2^5 coalitions in one call
        groups = token_contributions(model.fusion, encoding.output.tokens, encoding.output.token_mask, labels=model.labels,
                                     token_names=getattr(model, "token_names", None))
    full = groups.full_logit.double().cpu().numpy()
    empty = groups.empty_logit.double().cpu().numpy()
    values = groups.values.double().cpu().numpy()
    low, high = modality_subset_range(encoding, calibration)
    probabilities = calibrated_probability(full, calibration)
    present = encoding.batch.present.cpu().numpy()
    thresholds = np.asarray(predictor.thresholds, dtype=np.float64)
    assessment = encoding.assessment
    described = describe_calibration(calibration)
    out = {}
    for i, f in enumerate(features):
        if not present[i].any():  # every modality out of domain: no prediction (see unscored_reasons)
            continue
        scores = PatientScores(f.patient_id, list(predictor.labels), full[i], probabilities[i], thresholds, described,
                               present[i], values[i], empty[i], low[i], high[i], tuple(groups.token_names))
        scores.label_calibrations = tuple(getattr(calibration, "per_label", ()))
        if assessment is not None:
            trust = assessment.trust(i, thresholds, predictor.level)
            scores.interval_low, scores.interval_high, scores.interval_level = trust.low, trust.high, trust.level
            scores.states, scores.status = tuple(trust.states), trust.status
            scores.left_out, scores.reason, scores.domain = tuple(trust.left_out), trust.reason, trust.domain.to_dict()
        out[f.patient_id] = scores
    return out


def describe_calibration(calibration: Any) -> str:
    """In words, for the researcher view: which calibration each label's probability went through."""
    methods = list(getattr(calibration, "methods", {}).values())
    if not methods:
        return "sigmoid of the logit"
    counts = {m: methods.count(m) for m in dict.fromkeys(methods)}
    formula = {"temperature": "sigmoid(log-odds / T), T fitted per label",
               "isotonic": "an isotonic map of sigmoid(log-odds)"}
    return "calibrated per label on validation patients (" + ", ".join(
        f"{n} label{'s' if n > 1 else ''} by {formula.get(m, m)}" for m, n in counts.items()) + ")"
