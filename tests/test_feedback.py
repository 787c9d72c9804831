"""Clinician feedback kept in the audit trail (medfuse_core/feedback.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfuse_core import audit
from medfuse_core.feedback import (PREDICTION_TARGET, checkpoint_identity, feedback_by_label, read_feedback,
                                   record_feedback)

ROOT = Path(__file__).resolve().parents[1]


def test_feedback_is_an_audit_entry_with_user_time_checkpoint_and_patient(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    audit.append("view_patient", user="ann", role="clinician", patient_id="P1", path=log)
    entry = record_feedback("disagree", user="ann", role="clinician", patient_id="P1",
                            checkpoint=ROOT / "assets" / "demo_model", label="Pneumonia",
                            target="Lab: Glucose (190 mg/dL)", comment="glucose <b>190</b> is not protective",
                            path=log)
    assert entry["action"] == "feedback" and entry["user"] == "ann" and entry["patient_id"] == "P1" and entry["time"]
    assert entry["detail"]["checkpoint"] == "assets/demo_model" and len(entry["detail"]["weights_sha256"]) == 64
    record_feedback("agree", user="bob", role="clinician", patient_id="P2", checkpoint=ROOT / "assets" / "demo_model",
                    label="Pneumonia", path=log)
    record_feedback("implausible", user="bob", role="clinician", patient_id="P2", checkpoint="", label="Sepsis",
                    target="Note: “Social: family at bedside”", path=log)
    assert audit.verify(log).ok  # feedback is chained like every other entry
    frame = read_feedback(log)
    assert list(frame["verdict"]) == ["disagree", "agree", "implausible"]
    assert frame["comment"][0] == "glucose <b>190</b> is not protective"  # kept as written; pages show it as text
    per_label = feedback_by_label(frame).set_index("label")
    assert per_label.loc["Pneumonia", ["agree", "disagree", "implausible", "about evidence", "total"]].tolist() == \
        [1, 1, 0, 1, 2]
    assert per_label.loc["Sepsis", "implausible"] == 1
    assert "verdict" in frame.to_csv(index=False).splitlines()[0]


def test_bad_feedback_is_refused_with_the_field_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with pytest.raises(ValueError, match="verdict"):
        record_feedback("maybe", user="ann", role="clinician", patient_id="P1", checkpoint="", label="X", path=log)
    with pytest.raises(ValueError, match="comment"):
        record_feedback("agree", user="ann", role="clinician", patient_id="P1", checkpoint="", label="X",
                        comment="x" * 1001, path=log)
    with pytest.raises(ValueError, match="patient_id"):
        record_feedback("agree", user="ann", role="clinician", patient_id="", checkpoint="", label="X", path=log)
    assert not log.exists()  # nothing written
    assert read_feedback(log).empty and feedback_by_label(read_feedback(log)).empty
    assert checkpoint_identity(tmp_path / "none") == {"checkpoint": "none", "weights_sha256": ""}
    assert PREDICTION_TARGET == "the prediction"
