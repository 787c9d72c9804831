"""The patients page, run headless with Streamlit's AppTest against the real demo cohort."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.components.worklist import modality_badges, worklist_frame
from medfuse_core.record import PatientRecord
from medfuse_core.sources.bundle import find_bundles, read_bundle

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture(autouse=True)
def _data_only(monkeypatch) -> None:
    """These pages are tested without a model (set but empty = no checkpoint, even if
    assets/demo_model exists); tests/app/test_dashboard_pages.py covers them with one."""
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", "")


def test_worklist_frame_has_one_row_per_patient(tiny_cohort: Path) -> None:
    records = [read_bundle(f) for f in find_bundles(tiny_cohort)]
    frame = worklist_frame(records)
    assert list(frame["patient"]) == [r.patient_id for r in records]
    assert frame["images"].sum() == sum(len(r.images) for r in records)
    assert set(frame.columns) >= {"patient", "age", "sex", "modalities", "warnings"}


def test_badges_show_absent_modalities_as_dots() -> None:
    assert modality_badges(PatientRecord("x")) == "– – – –"


def test_page_lists_the_demo_patients() -> None:
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Patients"
    frame = at.dataframe[0].value
    assert len(frame) == 40
    assert frame["patient"].is_unique
    assert "40 patients" in at.caption[0].value


def test_demo_banner_only_on_the_demo(tiny_cohort: Path, monkeypatch) -> None:
    demo = AppTest.from_file(MAIN, default_timeout=120).run()
    assert any("synthetic" in info.value for info in demo.info)
    monkeypatch.setenv("MEDFUSE_LENS_SOURCE", str(tiny_cohort))
    own = AppTest.from_file(MAIN, default_timeout=120).run()
    assert not own.exception, own.exception
    assert not any("synthetic" in info.value for info in own.info)
    assert len(own.dataframe[0].value) == 12
