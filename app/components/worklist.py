"""Pure functions that turn records into what the worklist shows (no Streamlit, testable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from medfuse_core.modalities import REGISTRY
from medfuse_core.record import MODALITIES, PatientRecord

if TYPE_CHECKING:  # the type only: components import no torch
    from medfuse_core.explain.scores import PatientScores

# Plain-text codes, not emoji: they render on every machine (a clinic PC may lack an emoji font).
MODALITY_CODES = {s.key: s.code for s in REGISTRY}


def modality_badges(record: PatientRecord) -> str:
    """One code per present modality, a dash for an absent one, in a fixed order."""
    return " ".join(MODALITY_CODES[m] if record.has(m) else "–" for m in MODALITIES)


def data_summary(record: PatientRecord) -> str:
    """What data the patient has, with counts, in one short column: 'LAB 24 · NOTE 3 · VIT · CXR 1'
    (absent modalities left out), so the worklist fits 1440 px without hiding the counts."""
    counts = {"labs": len(record.labs.table) if record.labs.present else 0, "notes": len(record.notes),
              "image": len(record.images)}  # vitals: a series, its count says little
    parts = [MODALITY_CODES[m] + (f" {counts[m]}" if counts.get(m) else "") for m in MODALITIES if record.has(m)]
    return " · ".join(parts) or "no data"


def worklist_frame(records: list[PatientRecord]) -> pd.DataFrame:
    """One row per patient: who, what data is there, and how many loading warnings."""
    rows = []
    for r in records:
        rows.append({
            "patient": r.patient_id,
            "age": r.age,
            "sex": r.sex or "",
            "admitted": r.index_time,
            "modalities": modality_badges(r),
            "labs": int(r.labs.present and len(r.labs.table)),
            "notes": len(r.notes),
            "images": len(r.images),
            "warnings": len(r.problems),
            "data": data_summary(r),
        })
    columns = ["patient", "age", "sex", "admitted", "modalities", "labs", "notes", "images", "warnings", "data"]
    return pd.DataFrame(rows, columns=columns)


# Abbreviations a clinician reads at a glance, for the longest phenotype names (display only).
ABBREVIATIONS = {"Chronic obstructive pulmonary disease": "COPD"}


def short_label(label: str) -> str:
    """'Pneumonia (except that caused by ...)' -> 'Pneumonia': the worklist's column is narrow; the
    longest names use their usual abbreviation ('COPD and bronchiectasis')."""
    short = label.split(" (")[0].split(";")[0].strip()
    for long, abbreviation in ABBREVIATIONS.items():
        short = short.replace(long, abbreviation)
    return short


def with_risk(frame: pd.DataFrame, scores: Mapping[str, PatientScores], disease: str | None = None) -> pd.DataFrame:
    """Adds `risk` (highest calibrated probability, or that of `disease`), `for` (which disease),
    `above` (how many labels are above their decision threshold), `interval` (the risk's uncertainty
    interval, when the checkpoint has one) and `review` (why the patient needs review: a modality out of
    domain, an uncertain decision for the risk's disease; "" when none); patients needing review first,
    then by risk, highest first. Patients without scores (no usable data: see
    medfuse_core.predictor.NoData) keep NaN, say "no data" and sort last."""
    risk, which, above, interval, review = [], [], [], [], []
    for pid in frame["patient"]:
        s = scores.get(pid)
        if s is None:
            risk.append(float("nan")), which.append("no data"), above.append(0), interval.append(""), review.append("")
            continue
        k = s.index(disease) if disease else s.top
        risk.append(float(s.probabilities[k]))
        which.append(short_label(s.labels[k]))
        above.append(int((s.probabilities >= s.thresholds).sum()))
        low, high = getattr(s, "interval_low", None), getattr(s, "interval_high", None)
        interval.append(f"{low[k]:.0%}–{high[k]:.0%}" if low is not None and high is not None else "")
        review.append(review_reason(s, k))
    out = frame.copy()
    out.insert(1, "risk", risk)
    out.insert(2, "for", which)
    out.insert(3, "above threshold", above)
    out.insert(4, "interval", interval)
    out.insert(5, "review", review)
    out["_first"] = out["review"] != ""
    out = out.sort_values(["_first", "risk"], ascending=[False, False], na_position="last", kind="stable")
    return out.drop(columns="_first").reset_index(drop=True)


def review_reason(scores: PatientScores, k: int) -> str:
    """Why a patient needs review, in a few words for the worklist's `review` column, for the label at
    index k ("" when it does not): "unusual film" (a modality unlike the training data, left out of the
    prediction) or "uncertain" (the decision's interval straddles the threshold)."""
    left_out = tuple(getattr(scores, "left_out", ()) or ())
    if left_out:
        return "unusual " + ", ".join("film" if m == "image" else m for m in left_out)
    states = tuple(getattr(scores, "states", ()) or ())
    if states and states[k] == "uncertain":
        return "uncertain"
    return ""


def filter_worklist(frame: pd.DataFrame, min_risk: float = 0.0, modalities: Sequence[str] = (),
                    needs_review: bool = False) -> pd.DataFrame:
    """Rows with risk >= min_risk (when there is a risk column), every modality in `modalities`, and (with
    `needs_review`, when there is a review column) a reason to review."""
    keep = pd.Series(True, index=frame.index)
    if needs_review and "review" in frame:
        keep &= frame["review"] != ""
    if "risk" in frame and min_risk > 0:
        keep &= frame["risk"].fillna(-1) >= min_risk
    for m in modalities:
        keep &= frame["modalities"].str.contains(MODALITY_CODES[m], regex=False)
    return frame[keep].reset_index(drop=True)
