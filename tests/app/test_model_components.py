"""Pure functions behind the model's pages: scoring, the waterfall, the report, zip unpacking."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.bundle_zip import unpack_zip
from app.components import contributions as C
from app.components import model_card as M
from app.components import report as R
from app.components.worklist import filter_worklist, with_risk, worklist_frame
from app.components.wording import TOKEN_LABELS
from medfuse_core.explain.scores import PatientScores
from medfuse_core.runtime.checkpoint import is_synthetic_model
from medfuse_core.record import Note, PatientRecord

LABELS = ["Pneumonia", "Sepsis <b>"]


def fake_scores(pid: str = "P1", probs=(0.7, 0.2)) -> PatientScores:
    contributions = np.array([[0.5, -0.25, 0.0, 1.0, 0.3], [-0.1, 0.2, 0.0, 0.0, -0.4]])
    base = np.array([-0.6, -1.2])
    logits = base + contributions.sum(1)
    return PatientScores(pid, list(LABELS), logits, np.array(probs), np.array([0.5, 0.3]), 1.0,
                         np.array([True, True, False, True]), contributions, base,
                         np.array(probs) - 0.1, np.array(probs) + 0.05)


# ------------------------------------------------------------------------------- waterfall


def test_waterfall_adds_up_from_base_to_logit() -> None:
    s = fake_scores()
    for label in LABELS:
        base, contributions, logit = C.scores_contributions(s, label)
        assert list(contributions) == list(TOKEN_LABELS.values())
        steps = C.waterfall_steps(base, contributions, logit)
        assert steps[0].end == pytest.approx(base) and steps[-1].end == pytest.approx(logit)
        assert base + sum(st.value for st in steps[1:-1]) == pytest.approx(logit, abs=1e-6)
        for a, b in zip(steps[1:-2], steps[2:-1]):
            assert a.end == b.start  # each step starts where the last ended
        fig = C.waterfall_figure(base, contributions, logit)
        trace = fig.data[0]
        assert list(trace.y) == [C.BASE_NAME, *TOKEN_LABELS.values(), C.OUTPUT_NAME]
        assert trace.x[0] + sum(trace.x[1:-1]) == pytest.approx(trace.x[-1], abs=1e-6)


def test_waterfall_refuses_contributions_that_do_not_add_up() -> None:
    with pytest.raises(ValueError, match="do not add up"):
        C.waterfall_steps(0.0, {"Labs (specific)": 1.0}, 2.0)


def test_sentences_and_predictions_table() -> None:
    s = fake_scores()
    text = C.probability_sentence("Pneumonia", 0.7, 0.5, 0.6, 0.75)
    assert "70%" in text and "above the decision threshold of 50%" in text and "60%" in text
    assert "below" in C.probability_sentence("X", 0.1, 0.5)
    said = C.contribution_sentence(s.contributions_for("Pneumonia"), C.present_by_modality(s))
    assert "X-ray (specific) raised it most" in said and "Notes (specific) lowered it most" in said
    assert "Vitals (specific)" in said  # absent, said so
    frame = C.predictions_frame(s)
    assert list(frame["disease"]) == LABELS  # highest probability first
    assert list(frame["call"]) == ["above", "below"]
    assert frame["range"][0] == "60%–75%"


# ------------------------------------------------------------------------------- report


def test_report_escapes_medical_text_and_has_the_chart() -> None:
    content = R.ReportContent("P<1>", "60 y · M", "labs", fake_scores(), "Sepsis <b>",
                              evidence={"Labs <i>": ["Lactate <script>alert(1)</script> 4.1"]},
                              notes=[("Nursing <u>", "Pt says <script>alert(2)</script> & more")])
    page = R.report_html(content)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "Sepsis &lt;b&gt;" in page and "Patient P&lt;1&gt;" in page and "<b>" not in page
    assert "<svg" in page and "Shared across modalities" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from outside
    pdf = R.report_pdf(content)
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


def test_report_without_a_model() -> None:
    page = R.report_html(R.ReportContent("P1", "", "none", None, None, synthetic_data=True))
    assert "no predictions" in page and "Not for clinical use" in page


# ------------------------------------------------------------------------------- worklist


def test_worklist_risk_sorts_and_filters() -> None:
    records = [PatientRecord("A", notes=[Note(None, "x", "text")]), PatientRecord("B"), PatientRecord("C")]
    scores = {"A": fake_scores("A", (0.2, 0.1)), "B": fake_scores("B", (0.9, 0.4))}
    frame = with_risk(worklist_frame(records), scores)
    assert list(frame["patient"]) == ["B", "A", "C"]  # unscored last
    assert frame["for"][0] == "Pneumonia" and frame["above threshold"][0] == 2
    by_sepsis = with_risk(worklist_frame(records), scores, "Sepsis <b>")
    assert by_sepsis["risk"][0] == pytest.approx(0.4)
    assert list(filter_worklist(frame, 0.5)["patient"]) == ["B"]
    assert list(filter_worklist(frame, 0.0, ["notes"])["patient"]) == ["A"]


def test_worklist_puts_patients_needing_review_first_with_their_reason_and_interval() -> None:
    records = [PatientRecord("A"), PatientRecord("B"), PatientRecord("C"), PatientRecord("D")]
    a, b, c = fake_scores("A", (0.2, 0.1)), fake_scores("B", (0.9, 0.4)), fake_scores("C", (0.5, 0.2))
    a.left_out, a.status = ("image",), "out of domain"
    c.states, c.status = ("uncertain", "below threshold"), "uncertain"
    for s in (a, b, c):
        s.interval_low, s.interval_high = s.probabilities - 0.05, s.probabilities + 0.1
    frame = with_risk(worklist_frame(records), {"A": a, "B": b, "C": c})
    assert list(frame["patient"]) == ["C", "A", "B", "D"]  # needing review first (then by risk), unscored last
    assert list(frame["review"]) == ["uncertain", "unusual film", "", ""]
    assert frame["interval"][2] == "85%–100%"
    assert list(filter_worklist(frame, needs_review=True)["patient"]) == ["C", "A"]
    table = C.predictions_frame(c)
    assert table.loc[table["disease"] == "Pneumonia", "call"].item() == "uncertain"
    assert table.loc[table["disease"] == "Pneumonia", "interval"].item() == "45%–60%"


# ------------------------------------------------------------------------------- model card


def test_reliability_figure_and_tables_tolerate_missing_keys() -> None:
    rows = [{"low": 0.0, "high": 0.1, "predicted": 0.05, "observed": 0.1, "count": 10},
            {"low": 0.5, "high": 0.6, "predicted": 0.55, "observed": 0.5, "count": 3}]
    fig = M.reliability_figure(rows)
    assert list(fig.data[1].x) == [0.05, 0.55]
    assert M.reliability_figure([]) is None
    assert M.summary_frame({}).empty and M.per_label_frame({}).empty and M.subsets_frame({}).empty
    table = M.summary_frame({"macro_auroc": 0.8, "ci95": {"macro_auroc": [0.7, 0.9]}})
    assert table["95% interval"][0] == "0.700 – 0.900"


def test_reliability_figure_draws_each_bins_interval_and_the_per_label_ece_headline() -> None:
    rows = [{"low": 0.0, "high": 0.1, "predicted": 0.05, "observed": 0.1, "count": 10, "observed_low": 0.02,
             "observed_high": 0.4},
            {"low": 0.9, "high": 1.0, "predicted": 0.95, "observed": 1.0, "count": 3, "observed_low": 0.44,
             "observed_high": 1.0}]
    fig = M.reliability_figure(rows)
    bars = fig.data[1].error_y
    assert list(bars.array) == pytest.approx([0.3, 0.0]) and list(bars.arrayminus) == pytest.approx([0.08, 0.56])
    table = M.summary_frame({"ece": {"calibrated": 0.012, "uncalibrated": 0.08}})
    assert table["metric"][0] == "calibration error (ECE), all labels, after per-label calibration"
    assert table["value"][0] == 0.012 and table["95% interval"][0] == "before: 0.080"


def test_synthetic_model_detection(tmp_path: Path) -> None:
    demo = tmp_path / "assets" / "demo_model"
    assert is_synthetic_model({}, demo, demo)
    assert is_synthetic_model({"data": {"path": "/x/demo-cohort-synth-1.0-seed1-n40"}}, tmp_path, demo)
    assert not is_synthetic_model({"data": {"path": "/data/mimic_bundles"}}, tmp_path, demo)


# ------------------------------------------------------------------------------- zips


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_unpack_refuses_zip_slip_links_and_bombs(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    out = unpack_zip(_zip({"../evil.txt": b"x", "/abs.txt": b"y", "C:/win.txt": b"z", "ok/patient.json": b"{}"}), target)
    assert {p.field for p in out.problems} == {"../evil.txt", "/abs.txt", "C:/win.txt"}
    assert not (tmp_path / "evil.txt").exists() and (target / "ok" / "patient.json").is_file()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777 << 16)
        z.writestr(link, "/etc/passwd")
    assert "links" in unpack_zip(buffer.getvalue(), target).problems[0].message

    bomb = _zip({"big.bin": b"\0" * (3 * 1024**2)})
    refused = unpack_zip(bomb, target, max_member=1024**2)
    assert not refused.ok and "more than 1 MB per file" in refused.problems[0].message
    assert not unpack_zip(bomb, target, max_total=1024**2).ok  # declared size over the cap

    assert "expected a zip archive" in unpack_zip(b"not a zip", target).problems[0].message
    assert "empty" in unpack_zip(_zip({}), target).problems[0].message
