"""A cohort built to break the dashboard (issue 19): every page still draws, says what it could not use,
and never shows a traceback or a server path. Headless with AppTest, data only (no model)."""

from __future__ import annotations

import importlib.util
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.components import vitals as V
from medfuse_core.sources.bundle import read_bundle

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
_spec = importlib.util.spec_from_file_location("make_corpus", BAD / "make_corpus.py")
M = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(M)
VITALS = "time,channel,value\n"
LATE = "2199-05-07 08:00:00"  # an index time so late that a 1900 row is further away than a Timedelta holds


@pytest.fixture(autouse=True)
def _data_only(monkeypatch) -> None:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", "")


def hostile_cohort(root: Path) -> Path:
    """Good patients beside bundles that used to take a page (or the whole worklist) down."""
    full = {"labs.csv": M.LABS_HEADER + M.GOOD_LAB, "vitals.csv": VITALS + M.GOOD_VITAL,
            "notes/index.csv": M.NOTE_INDEX, "notes/note_00.txt": M.GOOD_NOTE}
    M.bundle("GOOD1", full, root=root)
    M.bundle("GOOD2", full, root=root)
    M.bundle("LAB1900", full | {"labs.csv": M.LABS_HEADER + M.GOOD_LAB.replace("2131", "2199")
                                + "1900-01-01 00:00:00,50971,Potassium,4.2,mEq/L,3.3,5.1,\n"},
             patient={"patient_id": "LAB1900", "index_time": LATE}, root=root)
    M.bundle("VIT1900", full | {"vitals.csv": VITALS + M.GOOD_VITAL.replace("2131", "2199")
                                + "1900-01-01 00:00:00,Heart Rate,80\n"},
             patient={"patient_id": "VIT1900", "index_time": LATE}, root=root)
    M.bundle("VIT17Y", full | {"vitals.csv": VITALS + M.GOOD_VITAL + "2148-05-07 09:00:00,Heart Rate,80\n"}, root=root)
    M.bundle("NOINDEX", full, patient={"patient_id": "NOINDEX"}, root=root)
    M.bundle("BADINDEX", full, patient={"patient_id": "BADINDEX", "index_time": "soon"}, root=root)
    # whole-bundle failures: listed on the worklist, never costing the others
    deep = M.bundle("DEEP", full, patient="{}", root=root)
    (deep / "patient.json").write_text("[" * 100_000 + "]" * 100_000)
    M.bundle("NOTUTF8", full, patient="{}", root=root)
    (root / "NOTUTF8" / "patient.json").write_bytes(b'{"patient_id": "caf\xe9"}')
    for folder in ("DUP_A", "DUP_B", "DUP_C"):
        M.bundle(folder, full, patient=M.PATIENT | {"patient_id": " DUPLICATE " if folder == "DUP_C" else "DUPLICATE"},
                 root=root)
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return hostile_cohort(tmp_path_factory.mktemp("hostile"))


def _run(source: Path, monkeypatch, page: str | None = None, **query) -> AppTest:
    monkeypatch.setenv("MEDFUSE_LENS_SOURCE", str(source))
    at = AppTest.from_file(MAIN, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at = (at.switch_page(page) if page else at).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_worklist_survives_every_bundle_and_lists_those_it_could_not_read(cohort: Path, monkeypatch) -> None:
    at = _run(cohort, monkeypatch)
    shown = next(d.value for d in at.dataframe if "patient" in d.value.columns)
    assert sorted(shown["patient"]) == ["BADINDEX", "GOOD1", "GOOD2", "LAB1900", "NOINDEX", "VIT17Y", "VIT1900"]
    assert "5 bundle folders could not be read and are not listed" in at.warning[0].value
    listed = next(d.value for d in at.dataframe if "why" in d.value.columns).set_index("folder")["why"].to_dict()
    assert listed["DEEP"] == ("DEEP/patient.json: expected JSON nested at most 64 levels deep; it nests deeper "
                              "(refused before parsing)")
    assert listed["NOTUTF8"] == "NOTUTF8/patient.json: expected UTF-8 text (invalid continuation byte at byte 19)"
    for folder in ("DUP_A", "DUP_B", "DUP_C"):
        others = ", ".join(f for f in ("DUP_A", "DUP_B", "DUP_C") if f != folder)
        assert listed[folder] == (f"{folder}/patient.json: patient_id: expected unique patient ids; 'DUPLICATE' occurs 3 "
                                  f"times (also in {others})")
    text = " ".join(str(v) for v in listed.values())
    assert str(cohort) not in text and "Traceback" not in text


@pytest.mark.parametrize("patient, says", [
    ("LAB1900", None),
    ("VIT1900", "1 observation more than 30 days from admission (up to 299.3 years) is not drawn."),
    ("VIT17Y", "1 observation more than 30 days from admission (up to 17.0 years) is not drawn."),
    ("NOINDEX", "The admission (index) time is unknown, so the vital signs cannot be placed"),
    ("BADINDEX", "The admission (index) time is unknown, so the vital signs cannot be placed"),
])
def test_every_panel_renders_what_it_can(cohort: Path, monkeypatch, patient: str, says: str | None) -> None:
    at = _run(cohort, monkeypatch, "views/patient.py", patient=patient)
    assert at.title[0].value == f"Patient {patient}"
    assert [h.value for h in at.subheader] == ["Labs", "Notes", "Vital signs", "Chest X-ray"]
    warnings = [w.value for w in at.warning]
    assert not any("could not be shown" in w for w in warnings), warnings
    if says:
        assert any(says in w for w in warnings), warnings
    if patient == "LAB1900":  # both results listed, the 1900 one with its (huge, negative) hours
        at.toggle(key="labs_timeline").set_value(True).run()
        assert not at.exception
        assert len(at.dataframe[-1].value) == 2 or any(len(d.value) == 2 for d in at.dataframe)


def test_vitals_axis_is_bounded(cohort: Path) -> None:
    """A row 17 years away neither stretches the hour axis nor multiplies its ticks (it froze Chromium)."""
    svg = V.vitals_svg(read_bundle(cohort / "VIT17Y"))
    ticks = [float(h) for h in re.findall(r">(-?\d+) h</text>", svg)]
    assert ticks and min(ticks) >= -V.AXIS_LIMIT_HOURS and max(ticks) <= V.WINDOW_HOURS + 1  # the far row is left out
    assert len(set(ticks)) <= 12
    width = float(re.search(r'<svg viewBox="0 0 (\d+) ', svg).group(1))
    xs = [float(x) for x in re.findall(r'<circle cx="([-\d.]+)"', svg)]
    assert xs and 0 <= min(xs) and max(xs) <= width  # every point drawn inside the chart


def test_hours_since_index_beyond_a_timedelta(cohort: Path) -> None:
    record = read_bundle(cohort / "VIT1900")
    hours = record.hours_since_index(record.vitals.table["time"])
    exact = (datetime(1900, 1, 1) - datetime(2199, 5, 7, 8)).total_seconds() / 3600  # python's datetime: no limit
    assert hours.iloc[0] == pytest.approx(exact) and hours.iloc[1] == pytest.approx(1.0)
    assert np.isnan(read_bundle(cohort / "NOINDEX").hours_since_index(record.vitals.table["time"])).all()


def test_query_values_and_ids_are_text_not_markdown(cohort: Path, monkeypatch) -> None:
    lure = "**Session expired** - [sign in again](https://evil.example)"
    at = _run(cohort, monkeypatch, "views/patient.py", patient=lure)
    warning = at.warning[0].value
    assert "\\*\\*Session expired\\*\\* - \\[sign in again\\]\\(https\\://evil.example\\)" in warning
    assert "[sign in again](" not in warning and "**Session" not in warning
    from app.components.plain import markdown_escape

    assert markdown_escape("x" * 10_000).endswith("… \\(cut\\)") and len(markdown_escape("x" * 10_000)) < 100


def test_hostile_zip_keeps_the_upload_page_and_the_checkpoint_section(tmp_path: Path, monkeypatch) -> None:
    from tests.app.test_upload_zip import GOOD, zip_of

    at = AppTest.from_file(MAIN, default_timeout=120)
    at.switch_page("views/upload.py").run()
    data = zip_of(GOOD + [("P00002/images/index.csv", "file,time,view\n"), ("P00002/images", b"x"),
                          ("P1", b"x"), ("P1/patient.json", "{}"), ("P00001/notes/" + "A" * 300, "x")])
    at.file_uploader(key="upload_zip").set_value(("hostile.zip", data, "application/zip")).run()
    assert not at.exception, [e.value for e in at.exception]
    messages = list(next(d.value for d in at.dataframe if "message" in d.value.columns)["message"])
    assert sum(m.startswith("refused: a file with the same path as a folder") for m in messages) == 2
    assert "refused: a file or folder name is 300 bytes long; expected at most 255" in messages
    assert at.header[0].value == "Patient Z1"
    assert at.file_uploader(key="upload_checkpoint")  # the section below the bundle is still drawn
    shown = " ".join(str(m) for m in messages)
    assert "medfuse-upload-" not in shown and "/tmp" not in shown
