"""The dashboard on the real MIMIC-III demo: chosen in the sidebar, imported once, listed and reviewed
with the labels of a checkpoint trained on it (AppTest, headless)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
SEPSIS = "Septicemia (except in labor)"


@pytest.fixture()
def mimic_env(shared_data: Path, mimic3_checkpoint: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDFUSE_LENS_MIMIC3", str(shared_data / "mimic-iii-demo"))
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(mimic3_checkpoint))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    return mimic3_checkpoint


def _run(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.session_state["source_choice"] = "MIMIC-III tables"
    for key, value in query.items():
        at.query_params[key] = value
    at = (at.switch_page(page) if page else at).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_worklist_lists_the_129_admissions_with_the_checkpoint_labels(mimic_env: Path) -> None:
    at = _run()
    frame = at.dataframe[0].value
    assert len(frame) == 129 and frame["patient"].str.startswith("H").all()
    scored = frame["risk"].notna()
    assert frame["risk"][scored].is_monotonic_decreasing and scored.sum() >= 125
    # an admission with nothing in the model's window has no risk, says so, and comes last
    assert (frame.loc[~scored, "for"] == "no data").all() and not scored[: scored.sum()].eq(False).any()
    assert not any("Demo data" in i.value for i in at.info)  # real tables: no synthetic banner
    assert not any("Demo model" in w.value for w in at.warning)  # a model trained on MIMIC, not the demo one
    at.selectbox(key="wl_disease").select(SEPSIS).run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 129


def test_review_shows_real_units_flags_and_absent_modalities(mimic_env: Path) -> None:
    at = _run("views/patient.py", patient="H100375")
    assert at.title[0].value == "Patient H100375"
    predictions = next(d.value for d in at.dataframe if "call" in d.value.columns)
    assert len(predictions) == 26  # 25 phenotypes + in-hospital mortality, from the checkpoint's config
    labs = next(d.value for d in at.dataframe if "unit" in d.value.columns)
    assert {"mg/dL", "mEq/L"} <= set(labs["unit"])  # D_LABITEMS / LABEVENTS units as recorded
    assert labs["flag"].astype(str).str.contains("abnormal|high|low").any()
    infos = " ".join(i.value for i in at.info)
    assert "No clinical notes" in infos and "No chest X-ray" in infos


def test_a_folder_that_is_not_mimic_says_so_and_falls_back(monkeypatch, tmp_path: Path, demo_checkpoint: Path) -> None:
    monkeypatch.setenv("MEDFUSE_LENS_MIMIC3", str(tmp_path))
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(demo_checkpoint))
    at = _run()
    assert "Not readable as MIMIC-III tables" in " ".join(e.value for e in at.sidebar.error)
    assert len(at.dataframe[0].value) == 40  # the demo cohort
