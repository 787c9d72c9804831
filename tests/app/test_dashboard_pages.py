"""Every page with a (tiny) trained model, headless with AppTest: worklist, review, model card, upload.

The checkpoint is the session's `demo_checkpoint` (trained on the demo cohort in ~30 s), pointed to
by MEDFUSE_LENS_CHECKPOINT as a deployment would; assets/demo_model is not needed.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.components.worklist import short_label
from medfuse_core.sources.bundle import find_bundles
from tests.app.test_patient_page import write_hostile_bundle

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PNEUMONIA = "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)"


@pytest.fixture()
def with_model(demo_checkpoint: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(demo_checkpoint))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    return demo_checkpoint


def _page(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=300)
    for k, v in query.items():
        at.query_params[k] = v
    return (at.switch_page(page) if page else at).run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _frame(at: AppTest, column: str):
    """The first table on the page with `column` (AppTest does not expose st.dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _text(elements) -> str:
    return " ".join(str(e.value) for e in elements)


# ------------------------------------------------------------------------------ sidebar, worklist


def test_worklist_shows_the_likely_range_and_why_review_beside_the_risk(with_model: Path) -> None:
    """Issue 17: the interval and the review reason are columns the clinician sees, not only frame columns
    (a merge once dropped them from column_order)."""
    at = _page()
    _ok(at)
    grid = at.dataframe[0]
    shown = list(grid.proto.column_order)
    assert shown[:5] == ["patient", "risk", "interval", "for", "review"] and "age · sex" in shown
    frame = grid.value
    assert frame["age · sex"][0] == f"{int(frame['age'][0])} {frame['sex'][0]}"


def test_worklist_sorted_by_risk_with_filters(with_model: Path) -> None:
    at = _page()
    _ok(at)
    frame = at.dataframe[0].value
    assert len(frame) == 40 and {"risk", "for", "above threshold", "modalities"} <= set(frame.columns)
    assert frame["risk"].is_monotonic_decreasing
    assert "Device:" in _text(at.sidebar.caption)
    assert at.sidebar.text_input(key="checkpoint_dir").value == str(with_model)
    assert any("Demo model" in w.value for w in at.warning)  # trained on the synthetic cohort

    at.selectbox(key="wl_disease").select(PNEUMONIA).run()
    _ok(at)
    frame = at.dataframe[0].value
    assert set(frame["for"]) == {"Pneumonia"} and frame["risk"].is_monotonic_decreasing
    threshold = float(frame["risk"].median())
    at.slider(key="wl_min_risk").set_value(round(threshold, 2)).run()
    _ok(at)
    assert 0 < len(at.dataframe[0].value) < 40
    assert (at.dataframe[0].value["risk"] >= round(threshold, 2) - 1e-9).all()
    at.multiselect(key="wl_modalities").select("image").run()
    _ok(at)
    assert at.dataframe[0].value["modalities"].str.contains("CXR").all() if len(at.dataframe) else True


def test_no_checkpoint_means_data_only_with_a_reason(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(tmp_path / "missing"))
    at = _page()
    _ok(at)
    assert "not a checkpoint" in _text(at.info)
    assert "risk" not in at.dataframe[0].value.columns
    review = _page("views/patient.py", patient="P00004")
    _ok(review)
    assert [h.value for h in review.subheader] == ["Labs", "Notes", "Vital signs", "Chest X-ray"]
    card = _page("views/model_card.py")
    _ok(card)
    assert "not a checkpoint" in _text(card.info)


# ------------------------------------------------------------------------------ patient review


def test_review_shows_predictions_and_switches_disease_and_patient(with_model: Path) -> None:
    at = _page("views/patient.py", patient="P00004")
    _ok(at)
    assert [h.value for h in at.subheader] == ["Predictions", "Labs", "Notes", "Vital signs", "Chest X-ray"]
    table = _frame(at, "call")
    assert len(table) == 11 and set(table["call"]) <= {"above", "below"}
    first = at.selectbox(key="disease").value
    assert table["disease"][0] == "▶ " + short_label(first)  # default: the highest risk
    sentence = _text(at.markdown)
    assert "estimated probability" in sentence and "modality-subset range" in sentence

    at.selectbox(key="disease").select(PNEUMONIA).run()
    _ok(at)
    assert "Pneumonia (except" in _text(at.markdown) and at.selectbox(key="disease").value == PNEUMONIA
    assert any(d.startswith("▶ Pneumonia") for d in _frame(at, "call")["disease"])

    labels = json.loads((with_model / "config.json").read_text())["model"]["labels"]
    lowest = _frame(_page("views/patient.py", patient="P00026"), "call")["disease"].iloc[-1]
    at.selectbox(key="disease").select(next(d for d in labels if short_label(d) == lowest)).run()
    at.selectbox(key="patient_picker").select("P00026").run()  # labs only
    _ok(at)
    assert at.title[0].value == "Patient P00026"
    # a newly picked patient opens on its own top disease, not the previous patient's choice (issue 18)
    table = _frame(at, "call")
    top = at.selectbox(key="disease").value
    assert table["disease"][0] == "▶ " + short_label(top)
    assert "Absent, so contributing nothing" in _text(at.caption)


def test_review_opens_on_the_disease_the_worklist_was_sorted_by(with_model: Path) -> None:
    """The worklist sorted by a disease opens the review with ?disease=; a later pick opens on the top one."""
    plain = _page("views/patient.py", patient="P00025")
    top = plain.selectbox(key="disease").value
    labels = json.loads((with_model / "config.json").read_text())["model"]["labels"]
    other = next(d for d in labels if d != top)
    at = _page("views/patient.py", patient="P00025", disease=other)
    _ok(at)
    assert at.selectbox(key="disease").value == other
    assert any(d.startswith("▶ " + short_label(other)) for d in _frame(at, "call")["disease"])
    at.selectbox(key="patient_picker").select("P00026").run()
    _ok(at)
    assert "disease" not in at.query_params
    table = _frame(at, "call")
    assert table["disease"][0] == "▶ " + short_label(at.selectbox(key="disease").value)


def test_planted_evidence_follows_the_disease(with_model: Path) -> None:
    # P00022 of the ward demo: heart failure planted in labs, notes and film; hypertension in notes and vitals
    at = _page("views/patient.py", patient="P00022")
    at.selectbox(key="disease").select("Congestive heart failure; nonhypertensive").run()
    at.toggle(key="show_planted").set_value(True).run()
    _ok(at)
    assert any("<mark" in h.value for h in at.html)
    assert at.slider(key="xray_opacity").value == pytest.approx(0.45)  # planted image region for CHF
    at.selectbox(key="disease").select("Essential hypertension").run()  # planted in notes and vitals only
    _ok(at)
    assert any("<mark" in h.value for h in at.html)
    assert not [s for s in at.slider if s.key == "xray_opacity"]


def test_planted_truth_for_mortality_says_nothing_was_planted(with_model: Path) -> None:
    at = _page("views/patient.py", patient="P00022")
    at.selectbox(key="disease").select("In-hospital mortality").run()
    at.toggle(key="show_planted").set_value(True).run()
    _ok(at)
    assert "Nothing was planted for In-hospital mortality" in _text(at.info)
    at.selectbox(key="disease").select("Congestive heart failure; nonhypertensive").run()  # planted: no such note
    _ok(at)
    assert "Nothing was planted" not in _text(at.info)


def test_clinician_view_has_no_log_odds_jargon_outside_the_researcher_expander(with_model: Path) -> None:
    at = _page("views/patient.py", patient="P00004")
    _ok(at)
    outside = " ".join(str(e.value) for kind in ("markdown", "caption", "info", "warning")
                       for e in getattr(at.main, kind) if not _inside_expander(at, e))
    for jargon in ("log-odds", "sigmoid", "Base value", "Shared across modalities", "subset range",
                   "Integrated Gradients", "Grad-CAM", "Temperature"):
        assert jargon not in outside, jargon
    assert "points" in _text(at.caption)  # how much each source moved the risk
    researcher = next(e for e in at.expander if e.label.startswith("For researchers: exact contributions"))
    assert "sigmoid" in _text(researcher.markdown) and "log-odds" in _text(researcher.caption)


def test_researcher_waterfall_is_drawn_when_its_expander_is_opened(with_model: Path) -> None:
    """Issue 18: folded, the expander holds the formula and methods but no chart for the browser to rebuild on
    every disease switch; opened (its state under its key, as a click sets it), it draws the waterfall."""
    at = _page("views/patient.py", patient="P00004")
    _ok(at)
    folded = next(e for e in at.expander if e.label.startswith("For researchers: exact contributions"))
    assert "sigmoid" in _text(folded.markdown) and not folded.get("plotly_chart")
    charts = len(at.get("plotly_chart"))
    at.session_state["researcher_contributions"] = True
    at.run()
    _ok(at)
    opened = next(e for e in at.expander if e.label.startswith("For researchers: exact contributions"))
    assert len(opened.get("plotly_chart")) == 1 and len(at.get("plotly_chart")) == charts + 1
    assert "sigmoid" in _text(opened.markdown)


def _inside_expander(at: AppTest, element) -> bool:
    for expander in at.expander:
        for kind in ("markdown", "caption", "info", "warning"):
            if any(e is element for e in getattr(expander, kind)):
                return True
    return False


# ------------------------------------------------------------------------------ model card


def test_model_card_shows_the_evaluation(with_model: Path) -> None:
    at = _page("views/model_card.py")
    _ok(at)
    assert at.title[0].value == "Model card"
    assert "synthetic patients only" in _text(at.warning)
    assert "macro AUROC (diseases)" in list(_frame(at, "metric")["metric"])
    assert len(_frame(at, "label")) == 11
    assert "Calibration" in [s.value for s in at.subheader]
    assert not any("no reliability data" in i.value for i in at.info)
    from medfuse_core.provenance import absolute_paths

    shown = _text(at.caption) + _text(at.markdown)
    assert "trained on" in shown and not absolute_paths(shown)  # no path of the machine that built it


# ------------------------------------------------------------------------------ upload


def _zip_folder(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, prefix + str(path.relative_to(folder)))
    return buffer.getvalue()


def _upload(data: bytes, name: str = "bundle.zip") -> AppTest:
    at = _page("views/upload.py")
    _ok(at)
    at.file_uploader(key="upload_zip").set_value((name, data, "application/zip")).run()
    return at


def test_upload_good_bundle_is_scored(with_model: Path) -> None:
    from medfuse_core.demo import demo_cohort_dir

    folder = next(f for f in find_bundles(demo_cohort_dir()) if f.name == "P00004")
    at = _upload(_zip_folder(folder, "P00004/"))
    _ok(at)
    assert not at.error, [e.value for e in at.error]
    assert at.header[0].value == "Patient P00004"
    assert len(_frame(at, "call")) == 11
    table = _frame(at, "call")  # the probabilities are there, as on the review page (issue 18)
    assert {"probability", "threshold", "range"} <= set(table.columns) and table["probability"].max() > 1
    words = _frame(at, "effect on risk")
    assert words["evidence"].is_unique  # a copied-forward note sentence is listed once
    column = "evidence (attribution, log-odds)"
    before = _frame(at, column)
    assert set(before["modality"]) <= {"Labs", "Notes", "Vitals", "X-ray"} and len(before) >= 3
    at.selectbox(key="upload_disease").select(PNEUMONIA).run()
    _ok(at)
    assert "Pneumonia (except" in _text(at.markdown)
    after = _frame(at, column)
    assert list(after[column]) != list(before[column])  # the evidence is the selected disease's


def test_upload_bad_zips_show_errors(with_model: Path, tmp_path: Path) -> None:
    at = _upload(b"this is not a zip file", "fake.zip")
    _ok(at)
    assert "zip was refused" in _text(at.error)
    assert "expected a zip archive" in " ".join(_frame(at, "message")["message"])

    bundle = write_hostile_bundle(tmp_path)
    (bundle / "patient.json").write_text("{ not json", encoding="utf-8")
    at = _upload(_zip_folder(bundle))
    _ok(at)
    assert "could be read" in _text(at.error)
    problems = _frame(at, "message")
    assert problems["file"].str.contains("patient.json").any()
    assert (problems["severity"] == "error").any()

    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as z:
        z.writestr("../../escape.txt", "x")
        z.writestr("P1/patient.json", json.dumps({"patient_id": "P1"}))
    at = _upload(slip.getvalue())
    _ok(at)
    assert "the path would leave the upload folder" in " ".join(_frame(at, "message")["message"])
    assert not (tmp_path.parent / "escape.txt").exists()


def test_vitals_left_out_by_the_domain_check_are_said_so(monkeypatch) -> None:
    """With the shipped model, P00022's vitals are unlike its training data (one of the demo's expected false
    alarms): the panel says they were left out, not merely that they did not move the risk."""
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(Path(MAIN).parents[1] / "assets" / "demo_model"))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    at = _page("views/patient.py", patient="P00022")
    _ok(at)
    captions = _text(at.caption)
    assert "The vital signs were left out of this prediction (unlike the training data)" in captions
    assert "did not move this risk in the model's window" not in captions


# ------------------------------------------------------------------------------ feedback


def test_feedback_from_the_review_reaches_the_audit_trail_and_the_lab(with_model: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    from medfuse_core import audit
    from medfuse_core.feedback import read_feedback

    log = tmp_path / "audit.log"
    monkeypatch.setenv("MEDFUSE_LENS_AUDIT_LOG", str(log))
    at = _page("views/patient.py", patient="P00004")
    _ok(at)
    disease = at.selectbox(key="disease").value
    assert "feedback_verdict" not in [r.key for r in at.radio]  # folded: the form is not built
    at.session_state["feedback_open"] = True  # as a click on the expander sets it
    at.run()
    _ok(at)
    at.radio(key="feedback_verdict").set_value("implausible")
    at.text_area(key="feedback_comment").input("boilerplate <i>sentence</i> as evidence")
    next(b for b in at.button if "Send feedback" in str(b.label)).click().run()
    _ok(at)
    assert "Saved: implausible" in _text(at.success)
    frame = read_feedback(log)
    assert len(frame) == 1 and frame["patient_id"][0] == "P00004" and frame["label"][0] == disease
    assert frame["user"][0] == "dev" and frame["checkpoint"][0] and audit.verify(log).ok

    lab = _page("views/lab.py")
    _ok(lab)
    per_label = _frame(lab, "implausible")
    assert per_label.set_index("label").loc[disease, "implausible"] == 1
    assert any(b.label == "Feedback (CSV)" for b in lab.get("download_button"))


def test_risk_over_time_and_the_next_test_on_the_review(with_model: Path) -> None:
    at = _page("views/patient.py", patient="P00026")  # labs only: notes, vitals and X-ray are missing
    _ok(at)
    charts = len(at.get("plotly_chart"))
    at.toggle(key="show_trajectory").set_value(True).run()
    _ok(at)
    assert len(at.get("plotly_chart")) == charts + 1  # the trajectory, drawn only when asked for
    assert any("risk with the data available" in c.proto.spec for c in at.get("plotly_chart"))
    assert any("What moved it" in c.value or "No arrival moved" in c.value for c in at.caption)
    at.toggle(key="show_next_test").set_value(True).run()
    _ok(at)
    said = _text(at.markdown)
    assert "Chest X-ray could move" in said and "Clinical notes could move" in said and "Vital signs could" in said
    assert "reference patients most like this one" in _text(at.caption)
