"""The patient review page, run headless with Streamlit's AppTest (demo cohort and a hostile bundle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from medfuse_core.record import ChestImage, ImageMetadata, Labs, Note, PatientRecord, Vitals
from medfuse_core.sources.bundle import write_bundle

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture(autouse=True)
def _data_only(monkeypatch) -> None:
    """These pages are tested without a model (set but empty = no checkpoint, even if
    assets/demo_model exists); tests/app/test_dashboard_pages.py covers them with one."""
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", "")
PANELS = ["Labs", "Notes", "Vital signs", "Chest X-ray"]
HOSTILE_NOTE = "Pt says <script>alert(1)</script> and <img src=x onerror=alert(2)>\nnext line & more"


def write_hostile_bundle(root: Path, patient_id: str = "HOSTILE") -> Path:
    """One bundle whose note is an XSS attempt and whose second image is not an image."""
    t0 = pd.Timestamp("2131-05-07 08:00:00")
    pixels = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    record = PatientRecord(
        patient_id, age=60, sex="M", index_time=t0,
        labs=Labs(pd.DataFrame({"time": [t0 + pd.Timedelta(hours=1)], "item": ["Lactate"], "value_text": ["4.1"],
                                "value": [4.1], "unit": ["mmol/L"], "ref_low": [0.5], "ref_high": [2.0]})),
        vitals=Vitals(pd.DataFrame({"time": [t0, t0 + pd.Timedelta(hours=3)], "channel": ["Heart Rate"] * 2,
                                    "value": [88.0, 121.0], "value_text": ["88", "121"]})),
        notes=[Note(t0 + pd.Timedelta(hours=2), "Physician <b>", HOSTILE_NOTE)],
        images=[ChestImage(t0, "PA", pixels, metadata=ImageMetadata(file_format="png", bits_stored=8))],
    )
    folder = write_bundle(record, root / patient_id)
    (folder / "images" / "broken.dcm").write_bytes(b"not a dicom file at all" * 4)
    with open(folder / "images" / "index.csv", "a", encoding="utf-8") as index:
        index.write("broken.dcm,2131-05-07 12:00:00,AP\n")
    return folder


def _open(patient: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    if patient:
        at.query_params["patient"] = patient
    return at.switch_page("views/patient.py").run()


def _infos(at: AppTest) -> list[str]:
    return [i.value for i in at.info]


@pytest.mark.parametrize("patient, absent", [
    ("P00004", []),  # everything, two images
    ("P00016", ["No clinical notes", "No chest X-ray"]),
    ("P00026", ["No clinical notes", "No vital signs", "No chest X-ray"]),  # labs only
])
def test_demo_patients_render_every_panel(patient: str, absent: list[str]) -> None:
    at = _open(patient)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == f"Patient {patient}"
    assert [h.value for h in at.subheader] == PANELS
    infos = " ".join(_infos(at))
    for phrase in absent:
        assert phrase in infos
    if not absent:
        assert "No " not in infos
        assert at.dataframe[0].value["item"].is_unique  # latest value per item by default
        assert any("mf-note" in h.value for h in at.html)
        assert len(at.selectbox(key="xray_image").options) == 2


def test_switching_patient_updates_page_and_link() -> None:
    at = _open("P00002")
    assert at.title[0].value == "Patient P00002"
    at.selectbox(key="patient_picker").select("P00015").run()
    assert not at.exception
    assert at.title[0].value == "Patient P00015"
    assert at.query_params["patient"] == "P00015"
    assert at.session_state["patient_id"] == "P00015"
    assert "No vital signs" in " ".join(_infos(at))


def test_session_state_opens_patient_and_unknown_id_falls_back() -> None:
    assert _open(patient_id="P00007").title[0].value == "Patient P00007"
    at = _open("NOPE")
    assert not at.exception
    assert at.title[0].value == "Patient P00000"
    assert "'NOPE' is not in this source" in at.warning[0].value


def test_timeline_toggle_planted_evidence_and_window_sliders() -> None:
    at = _open("P00022")  # ward demo: heart failure planted in labs, notes and film
    latest_rows = len(at.dataframe[0].value)
    at.toggle(key="labs_timeline").set_value(True).run()
    assert len(at.dataframe[0].value) > latest_rows
    at.toggle(key="show_planted").set_value(True).run()
    at.selectbox(key="disease").select("Congestive heart failure; nonhypertensive").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("<mark" in h.value for h in at.html)  # planted note spans shown through the highlight path
    assert at.slider(key="xray_opacity").value == pytest.approx(0.45)  # the image overlay is on
    at.slider(key="xray_centre").set_value(80).run()  # grey levels of the film (0-255 here)
    at.slider(key="xray_width").set_value(50).run()
    assert not at.exception
    at.text_input(key="notes_find").input("sepsis").run()
    assert not at.exception


def test_hostile_note_is_text_and_corrupt_image_is_a_warning(tmp_path: Path, monkeypatch) -> None:
    write_hostile_bundle(tmp_path)
    monkeypatch.setenv("MEDFUSE_LENS_SOURCE", str(tmp_path))
    at = _open("HOSTILE")
    assert not at.exception, [e.value for e in at.exception]
    notes = "".join(h.value for h in at.html if "mf-note" in h.value)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in notes and "<script" not in notes
    assert "&lt;img src=x onerror=alert(2)&gt;" in notes and "<img" not in notes
    assert "Physician &lt;b&gt;" in notes
    warnings = at.expander[0]
    assert "Loading warnings (1)" in warnings.label
    problems = warnings.dataframe[0].value
    assert problems["file"].str.contains("broken.dcm").any()
    assert [h.value for h in at.subheader] == PANELS  # the rest of the page works
    assert "No chest X-ray" not in " ".join(_infos(at))  # the readable image is still shown
