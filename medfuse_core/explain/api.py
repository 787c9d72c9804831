"""`explain(record, predictor) -> Explanation`: one patient's calibrated predictions, group contributions
and evidence maps per label, as one object for the app and as JSON for the CLI.

JSON schema (``Explanation.to_dict()``; strict JSON, no NaN)::

    {
      "patient_id": str,
      "labels": [label names explained, in the model's order],
      "present": {"labs": bool, "notes": bool, "vitals": bool, "image": bool, ...},   # the modalities the model used
      "calibration": str,                    # how the probabilities were calibrated, in words
      "trust": {"status": "out of domain" | "uncertain" | "ok", "needs_review": bool,
                "domain": {"available": bool, "out_of_domain": [modality], "per_modality": {...}},
                "left_out": [modality], "reason": str,   # present but out of domain: left out, in plain words
                "intervals": {"level", "method"} | null},
      "evidence": bool,                      # False: the evidence fields below are empty
      "coverage": {"hours": float, "modalities": {MODALITY: {"modality", "given", "read",
                   "not_read": {reason: count}, "details": [{"what", "time", "reason"}]}}},
                                             # what the model read and what not (features/coverage.py)
      "per_label": {                         # keyed by label name, one entry per name in "labels"
        NAME: {
          "probability": float,              # calibrated_probability(logit, the checkpoint's calibration)
          "interval": {"low", "high", "level"} | null,   # conformal interval (null: none fitted)
          "state": "above threshold" | "below threshold" | "uncertain",   # uncertain: interval straddles it
          "logit": float, "empty_logit": float,   # the model's logit; every fusion token masked
          "threshold": float, "positive": bool,
          "groups": {"specific:labs": f, "specific:notes": f, "specific:vitals": f,
                     "specific:image": f, "shared": f},   # exact Shapley values; absent modality 0;
                                                          # sum == logit - empty_logit
          "labs": [{"key", "name", "attribution", "value", "value_text", "unit", "time",
                    "features": {last, min, max, trend}, "feature_attributions": {...}}],   # ranked
          "note_sentences": [{"sentence", "note_index", "start", "end", "text", "attribution"}],   # ranked
          "note_tokens": [{"sentence", "note_index", "start", "end", "token", "attribution"}],     # text order
          "vitals": [{"channel", "start_hour", "end_hour", "attribution", "channel_total"}],       # ranked spans
          "vitals_matrix": {"channels": [17 names], "values": [[hours x 17]], "convergence_delta",
                            "imputed_attribution"} | null,   # 0 on cells of imputed normal values
          "image": {"method", "image_index", "film_shape": [rows, cols], "shape": [h, w],
                    "heatmap": [[h x w]], "convergence_delta"} | null,   # heatmap block-averaged to <= 64 px
          "convergence_delta": {"labs", "note_sentences", "note_tokens", "vitals", "image"},
          "notes_token_level": str,         # what the token-level note attribution covered
          KEY: {...}                         # one entry per other registered modality the model reads
                                             # (medfuse_core/modalities.py): its evidence method's JSON
        }
      }
    }

The dataclass keeps the full-resolution numpy arrays (the image heatmap on the film's pixel grid, the
vitals matrix); only the JSON is compacted. Models without fusion tokens (the baselines) get
``groups`` and ``empty_logit`` null.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from medfuse_core.explain.evidence import (
    DEFAULT_IMAGE_METHOD,
    EvidenceExplainer,
    ImageEvidence,
    LabelEvidence,
    VitalsEvidence,
)
from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.explain.encoding import encode_checked
from medfuse_core.explain.scores import describe_calibration
from medfuse_core.explain.groups import token_contributions
from medfuse_core.features.batch import collate
from medfuse_core.features.coverage import Coverage
from medfuse_core.numbers import json_safe
from medfuse_core.predictor import NoDataError, all_out_of_domain_reason, no_data_reason
from medfuse_core.record import MODALITIES, PatientRecord
from medfuse_core.runtime.calibration import calibrated_probability

__all__ = ["Explanation", "LabelExplanation", "explain", "JSON_HEATMAP_MAX"]

JSON_HEATMAP_MAX = 64  # longest side of the image heatmap in JSON


@dataclass
class LabelExplanation:
    label: str
    probability: float
    logit: float
    empty_logit: float | None
    threshold: float
    groups: dict[str, float] | None  # token name -> Shapley value; None for models without fusion tokens
    evidence: LabelEvidence | None = None
    interval: dict[str, float] | None = None  # {"low", "high", "level"}: the conformal interval
    state: str | None = None  # runtime/trust.py's label state

    def to_dict(self) -> dict[str, Any]:
        ev = self.evidence or LabelEvidence(self.label)
        return {
            "probability": self.probability,
            "logit": self.logit,
            "empty_logit": self.empty_logit,
            "threshold": self.threshold,
            "positive": bool(self.probability >= self.threshold),
            "interval": self.interval,
            "state": self.state,
            "groups": self.groups,
            "labs": [asdict(e) for e in ev.labs],
            "note_sentences": [asdict(e) for e in ev.note_sentences],
            "note_tokens": [asdict(e) for e in ev.note_tokens],
            "vitals": [asdict(s) for s in ev.vitals.top] if ev.vitals else [],
            "vitals_matrix": _vitals_json(ev.vitals),
            "image": _image_json(ev.image),
            "convergence_delta": dict(ev.convergence_delta),
            "notes_token_level": ev.notes_token_level,
            **{modality: evidence for modality, evidence in ev.extra.items()},  # other registered modalities
        }


@dataclass
class Explanation:
    patient_id: str
    labels: list[str]
    per_label: dict[str, LabelExplanation]
    present: dict[str, bool] = field(default_factory=dict)  # the modalities the model used
    calibration: str = ""
    evidence: bool = True
    trust: dict[str, Any] | None = None  # PatientTrust.to_dict()
    coverage: Coverage | None = None  # what the model read of the record and what not, with the reason

    def to_dict(self) -> dict[str, Any]:
        out = {
            "patient_id": self.patient_id,
            "labels": list(self.labels),
            "present": dict(self.present),
            "calibration": self.calibration,
            "trust": self.trust,
            "evidence": self.evidence,
            "coverage": None if self.coverage is None else self.coverage.to_dict(),
            "per_label": {name: self.per_label[name].to_dict() for name in self.labels},
        }
        return json_safe(out)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# ---------------------------------------------------------------------------------- JSON helpers


def _round(a: np.ndarray, digits: int = 5) -> list:
    """Nested lists with `digits` significant digits (compact, still exact enough to plot)."""
    return [[float(f"{v:.{digits}g}") for v in row] for row in np.asarray(a, dtype=np.float64)]


def compact_map(values: np.ndarray, longest: int = JSON_HEATMAP_MAX) -> np.ndarray:
    """Block-average (box filter) a 2-D map so that its longer side is at most `longest`."""
    values = np.asarray(values, dtype=np.float32)
    rows, cols = values.shape
    if max(rows, cols) <= longest:
        return values
    scale = longest / max(rows, cols)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(values)).resize(size, Image.Resampling.BOX), dtype=np.float32)


def _vitals_json(v: VitalsEvidence | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"channels": list(v.channels), "values": _round(v.matrix), "convergence_delta": v.convergence_delta,
            "imputed_attribution": v.imputed_attribution}


def _image_json(im: ImageEvidence | None) -> dict[str, Any] | None:
    if im is None:
        return None
    small = compact_map(im.heatmap)
    return {"method": im.method, "image_index": im.image_index, "film_shape": list(im.heatmap.shape),
            "shape": list(small.shape), "heatmap": _round(small), "convergence_delta": im.convergence_delta}


# ---------------------------------------------------------------------------------------- explain


def explain(record: PatientRecord, predictor, labels: Sequence[str] | None = None, evidence: bool = True, *,
            image_method: str = DEFAULT_IMAGE_METHOD, **evidence_options) -> Explanation:
    """Explain one patient with a loaded `Predictor`: all labels by default, or `labels` (names).

    evidence=False skips the Captum evidence maps (groups and probabilities only, milliseconds).
    evidence_options go to `EvidenceExplainer.label_evidence` (lab_method, top_sentences, n_steps,
    token_steps).
    """
    model = predictor.model
    names = list(model.labels)
    chosen = names if labels is None else list(labels)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}; the checkpoint's labels are {names}")
    chosen = [n for n in names if n in set(chosen)]  # model order, no duplicates

    modalities = tuple(getattr(model, "modalities", MODALITIES))
    features, index = predictor.featurize([record])  # featurised once
    f, ix = features[0], index[0]
    encoding = encode_checked(predictor, collate([f]).to(predictor.device))  # every encoder once
    # a modality out of domain is left out of everything below, as it is of the prediction
    f = replace(f, present=encoding.batch.present[0].cpu().numpy().astype(bool))
    if not f.present.any():
        check = encoding.assessment.checks[0]
        raise NoDataError(f"{f.patient_id}: " + (all_out_of_domain_reason(check) if check.flagged
                                                 else no_data_reason(predictor.hours)))
    trust = encoding.assessment.trust(0, np.asarray(predictor.thresholds, dtype=np.float64), predictor.level)
    full = encoding.output.logits[0].double().cpu().numpy()
    empty = values = token_names = None
    if hasattr(model, "fusion"):  # exact group contributions from the encoded tokens (no encoder runs)
        with eval_mode(model):
            groups = token_contributions(model.fusion, encoding.output.tokens, encoding.output.token_mask,
                                         labels=names, token_names=getattr(model, "token_names", None))
        full = groups.full_logit[0].double().cpu().numpy()
        empty = groups.empty_logit[0].double().cpu().numpy()
        values = groups.values[0].double().cpu().numpy()  # (K, tokens)
        token_names = groups.token_names

    explainer = None
    if evidence:
        has_notes = bool(f.present[list(modalities).index("notes")])
        backbone = predictor.featurizer.backbone if has_notes else None
        explainer = EvidenceExplainer(model, f, ix, record, backbone, predictor.featurizer.vocabulary,
                                      hours=float(predictor.featurizer.spec.hours), encoding=encoding)

    per_label = {}
    for name in chosen:
        k = names.index(name)
        logit = float(full[k])
        per_label[name] = LabelExplanation(
            label=name,
            probability=float(calibrated_probability(np.array([full]), predictor.calibration)[0, k]),
            logit=logit,
            empty_logit=None if empty is None else float(empty[k]),
            threshold=float(predictor.thresholds[k]),
            groups=None if values is None else {t: float(v) for t, v in zip(token_names, values[k])},
            evidence=explainer.label_evidence(k, image_method=image_method, **evidence_options) if explainer else None,
            **trust.label_dict(k),
        )
    present = {m: bool(f.present[i]) for i, m in enumerate(modalities)}
    return Explanation(f.patient_id, chosen, per_label, present, describe_calibration(predictor.calibration),
                       bool(evidence), trust.to_dict(), predictor.featurizer.coverage(record).leaving_out(trust.left_out))
