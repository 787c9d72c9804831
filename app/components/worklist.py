"""Pure functions that turn records into what the worklist shows (no Streamlit, testable)."""

from __future__ import annotations

import pandas as pd

from medfuse_core.record import MODALITIES, PatientRecord

MODALITY_ICONS = {"labs": "🧪", "notes": "📝", "vitals": "📈", "image": "🩻"}


def modality_badges(record: PatientRecord) -> str:
    """One icon per present modality, a dot for an absent one, in a fixed order."""
    return " ".join(MODALITY_ICONS[m] if record.has(m) else "·" for m in MODALITIES)


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
