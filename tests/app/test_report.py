"""The printable report (issue 18 item 4): the PDF is rendered to PNG with poppler's pdftoppm and looked at.

Page 1 must hold the patient on one A4 page: the predictions table with its range, the film with the
evidence overlay, the vitals chart, the abnormal labs with their times and what was not read.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.components import report as R
from medfuse_core.record import Labs, Note, PatientRecord, Vitals
from tests.app.test_model_components import fake_scores

PDFTOPPM = shutil.which("pdftoppm")


def _content() -> R.ReportContent:
    yy, xx = np.mgrid[0:128, 0:128]
    film = np.clip(0.15 + 0.7 * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / 2000.0), 0, 1).astype(np.float32)
    overlay = np.zeros_like(film)
    overlay[20:50, 70:110] = 1.0  # where the evidence is
    hours = np.arange(0, 60, 2, dtype=float)
    vitals = {"HR (bpm)": (hours, 80 + 10 * np.sin(hours / 6)), "SpO2 (%)": (hours, 95 - hours / 30)}
    labs = [{"item": "Sodium", "value": "120", "unit": "mEq/L", "flag": "critical low", "reference": "133–145",
             "time": "2131-05-07 09:12 (+1.2 h)"}]
    return R.ReportContent("P00007", "63 y · F · admitted 2131-05-07 08:00", "labs, notes, chest X-ray",
                           fake_scores(), "Pneumonia", checkpoint="assets/demo_model", synthetic_data=True,
                           evidence={"Model attribution": ["Sodium (120 mEq/L at 2131-05-07 09:12): +0.4"]},
                           notes=[("+1.0 h · Physician", "Cough and fever $5 copay.")],
                           image=film, overlay=overlay, image_caption="image 1 · PA · +2.0 h", vitals=vitals,
                           labs=labs, coverage=["Vital signs: not in the record.", "Labs: 3 of 20 results outside "
                                                "the first 48 h (not read)."])


def _pages(pdf: bytes, tmp_path: Path) -> list[np.ndarray]:
    from PIL import Image

    if PDFTOPPM is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed; .ci/run installs it")
    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run([PDFTOPPM, "-r", "60", "-png", str(tmp_path / "report.pdf"), str(tmp_path / "page")], check=True,
                   timeout=60)
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(tmp_path.glob("page*.png"))]


def test_pdf_page_one_holds_the_patient_with_film_overlay_and_vitals(tmp_path: Path) -> None:
    pages = _pages(R.report_pdf(_content()), tmp_path)
    assert len(pages) >= 2  # page 1 the patient, then the appendix (evidence, notes, exact chart)
    first = pages[0]
    h, w, _ = first.shape
    assert abs(h / w - 297 / 210) < 0.02  # A4 portrait
    grey = first.mean(axis=2)
    film_area = grey[int(0.3 * h):int(0.75 * h), : w // 2]
    assert (film_area < 60).mean() > 0.02  # the film's dark background is drawn on page 1
    r, g, b = (first[..., i].astype(int) for i in range(3))
    orange = (r > 150) & (r - g > 40) & (r - b > 70)  # the overlay tints the film orange
    assert orange[int(0.3 * h):int(0.75 * h), : w // 2].sum() > 20  # the evidence overlay on the film
    blue_line = (b > 90) & (r < 80) & (g < 110)
    assert blue_line[int(0.6 * h):, :].sum() > 20  # the vitals traces at the bottom of the page


def test_pdf_without_film_or_model_still_prints(tmp_path: Path) -> None:
    content = R.ReportContent("P1", "", "labs", None, None, synthetic_data=True, coverage=["Notes: not in the record."])
    pages = _pages(R.report_pdf(content), tmp_path)
    assert len(pages) == 1


def test_html_report_has_the_film_vitals_times_and_coverage() -> None:
    page = R.report_html(_content())
    assert page.count("data:image/png;base64,") == 2  # film with overlay, vitals chart
    assert "2131-05-07 09:12 (+1.2 h)" in page and "critical low" in page
    assert "What the model did not read" in page and "outside the first 48 h" in page
    assert "range with fewer sources" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_coverage_lines_say_what_was_not_read() -> None:
    t0 = pd.Timestamp("2131-05-07 08:00")
    labs = pd.DataFrame({"time": [t0 + pd.Timedelta(hours=h) for h in (1, 30, 60)], "item": "Sodium",
                         "value": 140.0, "value_text": "140", "unit": "mEq/L", "ref_low": 133.0, "ref_high": 145.0,
                         "censored": "", "flag": ""})
    record = PatientRecord("P1", index_time=t0, labs=Labs(labs), vitals=Vitals(),
                           notes=[Note(t0 + pd.Timedelta(hours=70), "Nursing", "late note")])
    lines = R.coverage_lines(record, 48, {"labs": "Labs", "notes": "Notes", "vitals": "Vital signs",
                                          "image": "Chest X-ray"})
    assert "Vital signs: not in the record." in lines and "Chest X-ray: not in the record." in lines
    assert any(line.startswith("Labs: 1 of 3 results outside the first 48 h") for line in lines)
    assert any(line.startswith("Notes: 1 of 1 notes outside") for line in lines)


# ------------------------------------------------------------------ the patient's status (issue 17)


def _pdf_text(pdf: bytes, tmp_path: Path) -> str:
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        pytest.skip("pdftotext (poppler-utils) is not installed; .ci/run installs it")
    (tmp_path / "status.pdf").write_bytes(pdf)
    subprocess.run([pdftotext, "-layout", str(tmp_path / "status.pdf"), str(tmp_path / "status.txt")], check=True, timeout=60)
    return " ".join((tmp_path / "status.txt").read_text().split())  # wrapped lines joined


def _scores_with(status: str, states: tuple[str, ...], domain_available: bool = True, intervals: bool = True):
    s = fake_scores()
    s.status, s.states = status, states
    s.left_out = ("image",) if status == "out of domain" else ()
    s.reason = ("The chest film did not look like the data the model was trained on, so it was left out of this "
                "prediction.") if status == "out of domain" else ""
    s.domain = {"available": True, "out_of_domain": list(s.left_out)} if domain_available else {"available": False}
    if intervals:
        s.interval_low, s.interval_high, s.interval_level = np.array([0.4, 0.0]), np.array([0.9, 0.35]), 0.9
    return s


def test_the_report_states_out_of_domain_and_uncertain_beside_the_predictions(tmp_path: Path) -> None:
    content = _content()
    content.scores = _scores_with("out of domain", ("uncertain", "below threshold"))
    page = R.report_html(content)
    head, table = page.split("<h2>Predictions</h2>")[1].split("<table", 1)
    assert "Status: out of domain. The chest film did not look like the data the model was trained on" in head
    assert "Status: uncertain for 1 of 2 diseases (Pneumonia)" in head  # stated before the table it qualifies
    assert "40%–90%" in table and "uncertain" in table  # the interval and the label's state in the table
    text = _pdf_text(R.report_pdf(content), tmp_path)
    assert "Status: out of domain. The chest film did not look like the data" in text
    assert "Status: uncertain for 1 of 2 diseases (Pneumonia)" in text
    assert "40%–90%" in text or "40%-90%" in text  # the PDF table shows the interval too


def test_the_report_says_insufficient_data_and_no_flags(tmp_path: Path) -> None:
    content = _content()
    content.scores = None
    record = PatientRecord("P1", None, None, None, labs=Labs(pd.DataFrame({"item": ["Sodium"], "value": [140.0]})))
    content.no_prediction_reason = R.no_prediction_reason(record, None, model_loaded=True)
    page = R.report_html(content)
    assert "Status: insufficient data. Every source this patient has was unlike the data the model was trained on" in page
    assert "No model was loaded" not in page
    assert "Status: insufficient data. Every source" in _pdf_text(R.report_pdf(content), tmp_path)
    assert R.no_prediction_reason(record, None, model_loaded=False) == ""  # no model: the old sentence stands
    assert R.no_prediction_reason(PatientRecord("P2", None, None, None), None, True).startswith("No data:")
    content.scores = _scores_with("ok", ("above threshold", "below threshold"))
    page = R.report_html(content)
    assert ("Status: no flags. Every source the model used looked like its training data. Every interval lies on one "
            "side of its decision threshold.") in page


def test_a_checkpoint_without_a_domain_file_is_not_called_in_domain() -> None:
    from app.components.contributions import status_lines
    from app.components.wording import NO_DOMAIN_CHECK_MESSAGE, NO_INTERVALS_MESSAGE

    lines = status_lines(_scores_with("ok", ("above threshold", "below threshold"), domain_available=False,
                                      intervals=False))
    assert lines == ["Status: no flags.", NO_DOMAIN_CHECK_MESSAGE, NO_INTERVALS_MESSAGE]
    assert "looked like its training data" not in " ".join(lines) and "no domain file" in NO_DOMAIN_CHECK_MESSAGE
    content = _content()
    content.scores = _scores_with("ok", ("above threshold", "below threshold"), domain_available=False)
    assert html.escape(NO_DOMAIN_CHECK_MESSAGE) in R.report_html(content)  # escaped like every string
