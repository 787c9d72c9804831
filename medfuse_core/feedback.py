"""Clinician feedback on a prediction or a piece of evidence, kept in the audit trail.

A clinician marks what the model said ("agree", "disagree", "implausible") with an optional comment.
Each mark is one audit entry (medfuse_core/audit.py `append`, action "feedback"): who, when, which
checkpoint (its repository-relative folder and the sha256 of its weights), which patient, which label
and what the mark is about. Nothing is kept anywhere else, so feedback is as tamper-evident as the
rest of the trail, and `read_feedback` rebuilds the table researchers see (and export as CSV) from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medfuse_core import audit
from medfuse_core.provenance import portable_path
from medfuse_core.runtime.digest import file_sha256

FEEDBACK_ACTION = "feedback"
VERDICTS = ("agree", "disagree", "implausible")
PREDICTION_TARGET = "the prediction"
MAX_COMMENT = 1000  # characters; a longer comment is refused, not cut
COLUMNS = ["time", "user", "role", "patient_id", "label", "target", "verdict", "comment", "checkpoint",
           "weights_sha256"]


def checkpoint_identity(checkpoint: str | Path) -> dict[str, str]:
    """{'checkpoint': portable folder, 'weights_sha256': sha256 of model.safetensors ('' if absent)}."""
    weights = Path(checkpoint) / "model.safetensors"
    try:
        sha = file_sha256(weights)
    except OSError:
        sha = ""
    return {"checkpoint": portable_path(checkpoint), "weights_sha256": sha}


def record_feedback(verdict: str, *, user: str, role: str | None, patient_id: str, checkpoint: str | Path,
                    label: str, target: str = PREDICTION_TARGET, comment: str = "",
                    path: str | Path | None = None) -> dict[str, Any]:
    """Append one feedback entry to the audit log and return it. ValueError names the field that is wrong;
    audit.AuditError when the log cannot be written (nothing is then kept)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict: expected one of {', '.join(VERDICTS)}, got {verdict!r}")
    if not str(patient_id or "").strip():
        raise ValueError("patient_id: expected the patient the feedback is about")
    if not str(label or "").strip():
        raise ValueError("label: expected the disease the feedback is about")
    comment = str(comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment: expected at most {MAX_COMMENT} characters, got {len(comment)}")
    detail = {"verdict": verdict, "label": str(label), "target": str(target or PREDICTION_TARGET),
              "comment": comment, **checkpoint_identity(checkpoint)}
    return audit.append(FEEDBACK_ACTION, user=user, role=role, patient_id=str(patient_id), detail=detail, path=path)


def read_feedback(path: str | Path | None = None) -> pd.DataFrame:
    """Every feedback entry of the audit log, oldest first (an empty table when there is no log)."""
    try:
        entries = audit.tail(path, n=10**9)
    except FileNotFoundError:
        entries = []
    rows = []
    for entry in entries:
        if entry.get("action") != FEEDBACK_ACTION:
            continue
        detail = entry.get("detail") or {}
        rows.append({"time": entry.get("time"), "user": entry.get("user"), "role": entry.get("role"),
                     "patient_id": entry.get("patient_id"), **{k: detail.get(k, "") for k in COLUMNS[4:]}})
    return pd.DataFrame(rows, columns=COLUMNS)


def feedback_by_label(feedback: pd.DataFrame) -> pd.DataFrame:
    """Per label: how many marks of each verdict, and how many were about evidence rather than the prediction."""
    columns = ["label", *VERDICTS, "about evidence", "total"]
    if feedback.empty:
        return pd.DataFrame(columns=columns)
    counts = pd.crosstab(feedback["label"], feedback["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    evidence = (feedback["target"] != PREDICTION_TARGET).groupby(feedback["label"]).sum()
    out = counts.assign(**{"about evidence": evidence.reindex(counts.index).fillna(0).astype(int)})
    out["total"] = counts.sum(axis=1)
    return out.reset_index().rename_axis(None, axis=1)[columns].sort_values("total", ascending=False,
                                                                                 kind="stable").reset_index(drop=True)
