"""Pure functions that turn records into what the worklist shows (no Streamlit, testable)."""

from __future__ import annotations

import pandas as pd

from medfuse_core.record import MODALITIES, PatientRecord

# Plain-text codes, not emoji: they render on every machine (a clinic PC may lack an emoji font).
MODALITY_CODES = {"labs": "LAB", "notes": "NOTE", "vitals": "VIT", "image": "CXR"}


def modality_badges(record: PatientRecord) -> str:
    """One code per present modality, a dash for an absent one, in a fixed order."""
    return " ".join(MODALITY_CODES[m] if record.has(m) else "–" for m in MODALITIES)


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
        })
    columns = ["patient", "age", "sex", "admitted", "modalities", "labs", "notes", "images", "warnings"]
    return pd.DataFrame(rows, columns=columns)
