"""The model's evidence on the patient review page: the plain-data mapping (pure) and the page (AppTest)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app.components import evidence as E
from medfuse_core.explain.evidence import (ImageEvidence, LabelEvidence, LabEvidence, SentenceEvidence,
                                           TokenEvidence, VitalsEvidence, VitalsSpan)
from medfuse_core.sources.vital_channels import CHANNEL_NAMES
from tests.app.test_patient_page import write_hostile_bundle

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PNEUMONIA = "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)"
CHF = "Congestive heart failure; nonhypertensive"


# ------------------------------------------------------------------------------ the mapping


def _label_evidence() -> LabelEvidence:
    matrix = np.zeros((48, len(CHANNEL_NAMES)), dtype=np.float32)
    hr = CHANNEL_NAMES.index("Heart Rate")
    matrix[3:6, hr] = [0.5, 1.0, 0.2]
    matrix[10, hr] = 0.001  # below 2% of the largest: not shaded
    heat = np.zeros((20, 30), dtype=np.float32)
    heat[5:8, 10:12] = 0.7
    return LabelEvidence(
        "X",
        labs=[LabEvidence("itemid:1", "Lactate", 0.4, 4.1, "4.1", "mmol/L"), LabEvidence("itemid:2", "Sodium", -0.1)],
        note_sentences=[SentenceEvidence(1, 0, 20, 30, "cough", -0.2), SentenceEvidence(0, 0, 0, 10, "fever", 0.3)],
        note_tokens=[TokenEvidence(0, 0, 0, 5, "fever", 0.25)],
        vitals=VitalsEvidence(matrix, list(CHANNEL_NAMES), [VitalsSpan("Heart Rate", 3, 6, 1.7, 1.701)], 0.0),
        image=ImageEvidence("gradcam", heat, heat[:8, :8], 1),
        convergence_delta={"labs": 1e-5}, notes_token_level="top 1")


def test_panel_evidence_maps_every_route_to_the_panels_formats() -> None:
    ev = E.panel_evidence(_label_evidence())
    assert ev["labs"] == {"Lactate": pytest.approx(0.4), "Sodium": pytest.approx(-0.1)}
    assert ev["notes"] == {0: [(0, 10, pytest.approx(0.3)), (20, 30, pytest.approx(-0.2))]}  # text order
    assert ev["note_tokens"] == {0: [(0, 5, pytest.approx(0.25))]}
    assert ev["vitals"] == {"Heart Rate": {3: pytest.approx(0.5), 4: pytest.approx(1.0), 5: pytest.approx(0.2)}}
    assert list(ev["image"]) == [1] and ev["image"][1].shape == (20, 30) and ev["image"][1].dtype == np.float32
    assert "Lactate (4.1 mmol/L): +0.400" in ev["summary"]["top"]["labs"][0]
    assert E.attribution_scale(ev, "vitals") == pytest.approx(1.0)
    assert E.attribution_scale(ev, "image") == pytest.approx(0.7)
    restored = pickle.loads(pickle.dumps(ev))  # what st.cache_data needs
    assert restored["labs"] == ev["labs"] and np.array_equal(restored["image"][1], ev["image"][1])


def test_panel_evidence_of_nothing_is_empty() -> None:
    assert E.panel_evidence(None) == E.empty_evidence()
    ev = E.panel_evidence(LabelEvidence("X"))
    assert ev["labs"] == {} and ev["vitals"] == {} and ev["image"] == {}


# ------------------------------------------------------------------------------ the page


@pytest.fixture()
def with_model(demo_checkpoint: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(demo_checkpoint))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    return demo_checkpoint


def _review(patient: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.query_params["patient"] = patient
    return at.switch_page("views/patient.py").run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _labs(at: AppTest):
    return next(d.value for d in at.dataframe if "item" in d.value.columns)


def _mode(at: AppTest) -> str:
    return next(h.value for h in at.html if "mf-evidence-mode" in h.value)


def _notes(at: AppTest) -> str:
    return "".join(h.value for h in at.html if "mf-note" in h.value)


def _exact_lab_attributions(at: AppTest) -> pd.Series:
    """The researchers' table of exact lab attributions (log-odds), opening its expander (built only when open)."""
    at.session_state["researcher_labs"] = True
    at.run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "attribution (log-odds)" in d.value.columns)
    return table.set_index("item")["attribution (log-odds)"]


def test_labs_table_carries_the_models_attribution_and_it_follows_the_disease(with_model: Path) -> None:
    at = _review("P00004")
    _ok(at)
    at.selectbox(key="disease").select(CHF).run()
    _ok(at)
    assert "model attribution" in _mode(at) and "planted truth" not in _mode(at)
    labs = _labs(at)
    assert "attribution" in labs.columns  # the effect in words for the clinician, "–" where not read
    words = labs.set_index("item")["attribution"]
    assert words.str.match(r"^[↑↓] (raises|lowers), (strong|moderate|weak)$").sum() >= 5
    assert "<mark" in _notes(at)  # sentence highlighting by attribution
    assert at.slider(key="xray_opacity").value == pytest.approx(0.45)  # the Grad-CAM overlay, opacity control
    assert at.selectbox(key="xray_image").value in (0, 1)
    chf = _exact_lab_attributions(at)
    assert len(chf) >= 5 and (chf != 0).any()

    at.selectbox(key="disease").select(PNEUMONIA).run()
    _ok(at)
    pneumonia = _exact_lab_attributions(at)
    both = chf.index.intersection(pneumonia.index)
    assert len(both) and not np.allclose(chf[both], pneumonia[both])  # switching disease changes the evidence
    assert "Pneumonia" in _mode(at)

    at.toggle(key="show_planted").set_value(True).run()  # the separate, labelled planted-truth view
    _ok(at)
    assert "planted truth" in _mode(at)


def test_hostile_note_stays_escaped_with_attribution_highlighting(with_model: Path, tmp_path: Path, monkeypatch) -> None:
    write_hostile_bundle(tmp_path)
    monkeypatch.setenv("MEDFUSE_LENS_SOURCE", str(tmp_path))
    at = _review("HOSTILE")
    _ok(at)
    assert "model attribution" in _mode(at)
    for level in ("Sentences", "Words"):  # sentence, then word-piece (text model) attribution
        if level == "Words":
            next(b for b in at.button_group if b.key == "notes_level").set_value("Words").run()
            _ok(at)
        notes = _notes(at)
        assert "<mark" in notes, level  # highlighting is on
        assert "<script" not in notes and "<img" not in notes, level
        text = re.sub(r"</?mark[^>]*>", "", notes)  # our highlight tags out: the escaped note text remains
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, level
        assert "&lt;img src=x onerror=alert(2)&gt;" in text, level
    assert sum(n.count("<mark") for n in [notes]) > 5  # word level: many small marks


def test_labs_only_patient_says_other_modalities_are_absent(with_model: Path) -> None:
    at = _review("P00026")  # labs only
    _ok(at)
    infos = " ".join(i.value for i in at.info)
    assert "No clinical notes" in infos and "The notes contribute nothing" in infos
    assert "The X-ray contributes nothing" in infos
    assert "attribution" in _labs(at).columns


def test_interactive_threads_sets_and_restores_torch_threads(monkeypatch) -> None:
    import torch

    from medfuse_core.runtime.threads import interactive_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("MEDFUSE_LENS_TORCH_THREADS", "1")
    with interactive_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("MEDFUSE_LENS_TORCH_THREADS", "not a number")
    with interactive_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
