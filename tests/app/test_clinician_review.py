"""Issue 18's clinician-review fixes at the component level (pure functions, no Streamlit)."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pandas as pd
import pytest

from app.components import contributions as C
from app.components import labs as L
from app.components import notes as N
from app.components import vitals as V
from app.components import xray as X
from app.components import shading as S
from medfuse_core.explain.probability_scale import no_data_probability, probability_contributions
from medfuse_core.record import ChestImage, ImageMetadata, Labs, PatientRecord
from tests.app.test_model_components import fake_scores


def _labs_record(rows: list[tuple[str, float, str, str, float, float]]) -> PatientRecord:
    t0 = pd.Timestamp("2130-01-01 08:00")
    table = pd.DataFrame({
        "time": [t0 + pd.Timedelta(hours=i) for i in range(len(rows))],
        "item": [r[0] for r in rows], "value": [r[1] for r in rows], "value_text": [r[2] for r in rows],
        "unit": [r[3] for r in rows], "ref_low": [r[4] for r in rows], "ref_high": [r[5] for r in rows],
        "censored": "", "flag": "",
    })
    return PatientRecord("P1", index_time=t0, labs=Labs(table))


def test_critical_values_are_flagged_critical_not_just_low_or_high() -> None:
    record = _labs_record([("Sodium", 120, "120", "mEq/L", 133, 145), ("Potassium", 6.4, "6.4", "mEq/L", 3.3, 5.1),
                           ("Sodium", 131, "131", "mEq/L", 133, 145), ("pH", 7.31, "7.31", "units", 7.35, 7.45)])
    rows = L.lab_rows(record)
    flags = dict(zip(rows["value"], rows["flag"]))
    assert flags["120"] == "critical low" and flags["6.4"] == "critical high"
    assert flags["131"] == "low" and flags["7.31"] == "low"  # abnormal, not critical
    assert rows["critical"].tolist() == [True, True, False, False]
    assert rows.loc[rows["item"] == "pH", "unit"].item() == ""  # pH has no unit ("units" in MIMIC)
    assert L.critical("Sodium", 120, "mg/dL") == ""  # never compared in another unit
    html = L.style_labs(L.latest_per_item(rows)).to_html()
    assert L.CRITICAL_BACKGROUND.split(";")[0] in html


def test_lab_effect_in_words_and_the_value_the_model_read_with_its_time() -> None:
    assert S.effect_words(0.4, 0.4) == "↑ raises, strong"
    assert S.effect_words(-0.1, 0.4) == "↓ lowers, moderate"
    assert S.effect_words(0.01, 0.4) == "↑ raises, weak"
    latest = pd.DataFrame({"item": ["Glucose", "WBC", "Sodium"], "value": ["129", "8.8", "140"],
                           "time": ["2130-01-03 09:00", "2130-01-03 09:00", "2130-01-01 10:00"]})
    read = {"Glucose": {"value": "137", "time": "2130-01-02T06:00:00"}, "Sodium": {"value": "140",
                                                                                  "time": "2130-01-01 10:00:00"}}
    shown = L.read_by_model(latest, read).tolist()
    assert shown == ["137 at 01-02 06:00", "", ""]


def test_word_pieces_merge_into_whole_words() -> None:
    text = "BP systolic 180, denies chest pain"
    pieces = [(3, 5, 0.1), (5, 8, 0.2), (8, 11, 0.3), (24, 29, 1.0)]  # "sy|sto|lic", "chest"
    words = N.whole_words(text, pieces)
    assert [(text[s:e], round(w, 6)) for s, e, w in words] == [("systolic", 0.6), ("chest", 1.0)]
    assert N.highlight_spans(text, words).count("<mark") == 2


def test_probability_points_add_up_to_the_risk_change() -> None:
    contributions = {"Labs": 1.2, "Notes": -0.5, "Vitals": 0.0, "Image": 2.0, "Shared": 0.3}
    shares = probability_contributions(-2.0, contributions, 0.57)
    total = 1 / (1 + math.exp(-(-2.0 + 3.0) / 0.57)) - no_data_probability(-2.0, 0.57)
    assert sum(shares.values()) == pytest.approx(total, abs=1e-12)
    assert shares["Vitals"] == 0.0 and shares["Notes"] < 0 < shares["Labs"] < shares["Image"]
    scores = fake_scores()
    from medfuse_core.explain.probability_scale import risk_points

    start, shares, end = risk_points(scores, scores.labels[0])
    points = C.source_points(shares)
    # the chart ends at the calibrated probability of the model's logit
    assert end == pytest.approx(100 / (1 + math.exp(-float(scores.logits[0]) / scores.calibration)), abs=1e-6)
    assert set(points) == set(C.SOURCE_NAMES.values())
    said = C.risk_sentence(points, C.present_by_modality(scores))
    assert "points" in said and "log-odds" not in said and "Shared" not in said and "specific" not in said
    chart = C.risk_bars_html(start, points, end)
    names = re.findall(r"text-overflow:ellipsis\" title=\"[^\"]*\">([^<]+)</span>", chart)
    assert names == [C.NO_DATA_NAME, *(html.escape(n) for n in points), html.escape(C.PATIENT_NAME)]
    assert "log-odds" not in chart and f"{end:.0f}%" in chart


def test_risk_bars_go_from_the_no_data_risk_to_the_patient_s_risk() -> None:
    """Each source's bar starts where the previous one ended (a waterfall in percentage points), orange up,
    blue down; names from the data are escaped."""
    chart = C.risk_bars_html(20.0, {"Lab results": 30.0, "<b>Notes</b>": -10.0}, 40.0)
    bars = re.findall(r"left:([\d.]+)%;width:([\d.]+)%;top:3px;bottom:3px;background:(rgb\([^)]+\))", chart)
    scale = 100 / 112
    starts = [round(float(left) / scale, 1) for left, _, _ in bars]
    widths = [round(float(width) / scale, 1) for _, width, _ in bars]
    assert starts == [0.0, 20.0, 40.0, 0.0] and widths == [20.0, 30.0, 10.0, 40.0]
    assert [colour for _, _, colour in bars][1:3] == ["rgb(230, 97, 1)", "rgb(59, 76, 192)"]
    assert "<b>Notes</b>" not in chart and "&lt;b&gt;Notes&lt;/b&gt;" in chart
    assert "+30 pts" in chart and "-10 pts" in chart and "40%" in chart


def test_predictions_display_has_short_names_and_percent_columns() -> None:
    scores = fake_scores()
    frame = C.predictions_display(scores, scores.labels[0])
    assert list(frame.columns) == ["disease", "probability", "interval", "threshold", "call", "range"]
    assert frame["disease"].str.len().max() < 40 and frame["disease"].str.startswith("▶ ").sum() == 1
    assert frame["probability"].between(0, 100).all() and frame["probability"].max() > 1


def test_vitals_ticks_stay_readable_over_a_long_stay_and_glasgow_is_spelt_right() -> None:
    assert V.hour_step(50, 6) == 12
    assert 420 / V.hour_step(420, 6) <= 6
    assert V.channel_name("Glascow coma scale total") == "Glasgow coma scale total"
    assert "Glascow" not in V.display_of("Glascow coma scale something new").label


def test_window_sliders_use_the_films_grey_levels() -> None:
    pixels = np.zeros((4, 4), dtype=np.float32)
    assert X.grey_levels(ChestImage(None, "film", pixels, metadata=ImageMetadata(bits_stored=12))) == 4095
    assert X.grey_levels(ChestImage(None, "film", pixels, metadata=ImageMetadata(file_format="png"))) == 255
