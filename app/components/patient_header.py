"""Patient header: who, when admitted, which modalities the record holds, what failed to load.

Plain-text modality codes (LAB/NOTE/VIT/CXR), no emoji: a clinic PC may lack an emoji font.
Everything from the record is escaped before it goes into HTML.
"""

from __future__ import annotations

import html

import pandas as pd

from app.components.worklist import MODALITY_CODES
from medfuse_core.modalities import REGISTRY
from medfuse_core.record import MODALITIES, PatientRecord

MODALITY_NAMES = {s.key: s.long_name for s in REGISTRY}  # in running text


def demographics_line(record: PatientRecord, extra: dict[str, str] | None = None) -> str:
    """'59 y · M · admitted 2166-06-13 06:27' with 'age unknown' etc. where a field is missing;
    `extra` adds labelled facts ("height": "178 cm")."""
    age = f"{record.age:.0f} y" if record.age is not None else "age unknown"
    sex = record.sex or "sex unknown"
    admitted = (f"admitted {record.index_time:%Y-%m-%d %H:%M}" if record.index_time is not None
                and pd.notna(record.index_time) else "admission time unknown")
    facts = [age, sex, admitted] + [f"{k} {v}" for k, v in (extra or {}).items()]
    return " · ".join(facts)


def modality_counts(record: PatientRecord) -> dict[str, int]:
    return {
        "labs": len(record.labs.table),
        "notes": sum(1 for n in record.notes if n.text.strip()),
        "vitals": len(record.vitals.table),
        "image": len(record.images),
    }


def modality_status(record: PatientRecord) -> pd.DataFrame:
    """One row per modality: code, name, present (bool), count of results/notes/observations/images."""
    counts = modality_counts(record)
    return pd.DataFrame([
        {"code": MODALITY_CODES[m], "modality": MODALITY_NAMES[m], "present": record.has(m), "count": counts[m]}
        for m in MODALITIES
    ])


def modality_badges_html(record: PatientRecord) -> str:
    """Inline badges: a filled code with its count when present, a struck-out grey code when absent."""
    badges = []
    for row in modality_status(record).itertuples(index=False):
        if row.present:
            style = "background:#0b6e99;color:white;border:1px solid #0b6e99;"
            text = f"{row.code} {row.count}"
            title = f"{row.modality}: {row.count}"
        else:
            style = "background:white;color:#999;border:1px dashed #bbb;text-decoration:line-through;"
            text = row.code
            title = f"{row.modality}: absent"
        badges.append(
            f'<span title="{html.escape(title)}" style="{style}display:inline-block;padding:1px 8px;'
            f'margin-right:6px;border-radius:4px;font:600 0.8rem ui-monospace,Menlo,Consolas,monospace;">'
            f"{html.escape(text)}</span>"
        )
    absent = [MODALITY_NAMES[m] for m in MODALITIES if not record.has(m)]
    note = f'<span style="color:#666;font-size:0.85rem;">absent: {html.escape(", ".join(absent))}</span>' if absent else ""
    return f'<div class="mf-modalities">{"".join(badges)}{note}</div>'


def problems_frame(record: PatientRecord) -> pd.DataFrame:
    """Loading warnings/errors as a table: severity, file (name within the bundle), field, message."""
    rows = []
    source = str(record.source or "")
    for p in record.problems:
        file = p.file
        if source and file.startswith(source):
            file = file[len(source):].lstrip("/\\") or file
        rows.append({"severity": p.severity.value, "file": file, "field": p.field, "message": p.message})
    return pd.DataFrame(rows, columns=["severity", "file", "field", "message"])
