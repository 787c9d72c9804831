"""The patient page's evidence components, as pure functions on hand-made records (no Streamlit)."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from app.components import labs as L
from app.components import notes as N
from app.components import patient_header as H
from app.components import vitals as V
from app.components import xray as X
from app.components.shading import MAX_ALPHA, NEGATIVE_RGB, POSITIVE_RGB, signed_rgba
from medfuse_core.problems import warning
from medfuse_core.record import ChestImage, ImageMetadata, Labs, Note, PatientRecord, Vitals

T0 = pd.Timestamp("2131-05-07 08:00:00")


def _labs() -> Labs:
    rows = [
        # time, item, value_text, value, censored, unit, low, high, flag
        ("09:12", "NTproBNP", "4210", 4210.0, "", "pg/mL", 0, 450, "abnormal"),
        ("09:12", "Creatinine", "1.1", 1.1, "", "mg/dL", 0.5, 1.1, ""),
        ("09:12", "Potassium", "HEMOLYZED", np.nan, "", "mEq/L", 3.3, 5.1, ""),
        ("21:40", "Lactate", "<0.5", 0.5, "below", "mmol/L", 0.5, 2.0, ""),
        ("21:40", "Creatinine", "2.4", 2.4, "", "mg/dL", 0.5, 1.1, ""),  # out of range, no flag given
        ("21:40", "Sodium", "128", 128.0, "", "mEq/L", 133, 145, "low"),
    ]
    table = pd.DataFrame(rows, columns=["t", "item", "value_text", "value", "censored", "unit",
                                        "ref_low", "ref_high", "flag"])
    table["time"] = pd.to_datetime("2131-05-07 " + table.pop("t"))
    return Labs(table)


def _vitals() -> Vitals:
    rows = []
    for h in range(0, 50, 2):
        t = T0 + pd.Timedelta(hours=h)
        rows += [(t, "Heart Rate", 80 + h, str(80 + h)), (t, "Systolic blood pressure", 120, "120")]
        rows.append((t, "Glascow coma scale total", 15 if h < 20 else 11, "15" if h < 20 else "11"))
    rows += [(T0, "Height", 178.0, "178"), (T0, "Weight", 81.5, "81.5")]
    return Vitals(pd.DataFrame(rows, columns=["time", "channel", "value", "value_text"]))


def _record(**kw) -> PatientRecord:
    base = dict(patient_id="P1", age=71, sex="F", index_time=T0, labs=_labs(), vitals=_vitals(),
                notes=[Note(T0 + pd.Timedelta(hours=2), "Physician", "Pt with CHF.\nOn lasix.")])
    base.update(kw)
    return PatientRecord(**base)


# ------------------------------------------------------------------------------------------ labs


def test_lab_rows_keep_reported_text_reference_and_flags() -> None:
    rows = L.lab_rows(_record())
    assert list(rows.columns[:7]) == L.DISPLAY_COLUMNS
    assert rows["stamp"].is_monotonic_increasing
    by = {(r.item, r.value): r for r in rows.itertuples()}
    assert by[("Potassium", "HEMOLYZED")].reference == "3.3–5.1"
    assert not by[("Potassium", "HEMOLYZED")].abnormal  # no number, no flag: not called abnormal
    assert by[("NTproBNP", "4210")].flag == "high" and by[("NTproBNP", "4210")].abnormal
    assert by[("Creatinine", "2.4")].flag == "high" and by[("Creatinine", "2.4")].abnormal  # computed
    assert by[("Creatinine", "1.1")].flag == "" and not by[("Creatinine", "1.1")].abnormal  # at the limit
    assert by[("Lactate", "<0.5")].flag == "low"  # censored below the lower limit
    assert by[("Sodium", "128")].flag == "low"
    assert by[("NTproBNP", "4210")].time == "2131-05-07 09:12"
    assert by[("NTproBNP", "4210")].hours == pytest.approx(1.2)


def test_latest_per_item_keeps_one_row_per_item_with_previous_and_count() -> None:
    latest = L.latest_per_item(L.lab_rows(_record()))
    assert latest["item"].is_unique
    assert list(latest["item"]) == ["NTproBNP", "Creatinine", "Potassium", "Lactate", "Sodium"]
    creat = latest.set_index("item").loc["Creatinine"]
    assert (creat["value"], creat["previous"], creat["n"]) == ("2.4", "1.1", 2)


def test_style_highlights_abnormal_rows_only_and_hides_helpers() -> None:
    rows = L.lab_rows(_record())
    styled = L.style_labs(rows)
    css = styled._compute().ctx  # {(row, col): [(prop, value), ...]}
    for i, abnormal in enumerate(rows["abnormal"]):
        cell = dict(css.get((i, 0), []))
        assert ("background-color" in cell) == bool(abnormal), (i, rows.loc[i, "item"])
    html_out = styled.to_html()
    assert "+1.2 h" in html_out and "stamp" not in html_out


def test_style_shades_signed_attribution_by_item_or_by_result() -> None:
    rows = L.lab_rows(_record())
    at = pd.Timestamp("2131-05-07 21:40")
    styled = L.style_labs(rows, {"NTproBNP": 0.8, ("Creatinine", at): -0.4})
    data = styled.data  # the effect in words, shaded by the weight (the weights: the researchers' expander)
    assert data.loc[data["item"] == "NTproBNP", "attribution"].tolist() == ["↑ raises, strong"]
    assert data.loc[data["item"] == "Creatinine", "attribution"].tolist() == ["–", "↓ lowers, strong"]  # 0.4 of 0.8: half the largest
    assert list(data.columns).index("attribution") == list(data.columns).index("value") + 1
    css = styled._compute().ctx
    col = list(data.columns).index("attribution")
    bnp_row = int(np.flatnonzero(data["item"] == "NTproBNP")[0])
    creat_rows = np.flatnonzero(data["item"] == "Creatinine")
    assert dict(css[(bnp_row, col)])["background-color"] == signed_rgba(0.8, 0.8)
    assert dict(css[(int(creat_rows[1]), col)])["background-color"] == signed_rgba(-0.4, 0.8)
    assert "background-color" not in dict(css.get((int(creat_rows[0]), col), []))  # not read: no shade
    assert signed_rgba(0.8, 0.8).startswith("rgba(230, 97, 1") and signed_rgba(-0.4, 0.8).startswith("rgba(59, 76, 192")


def test_empty_labs_give_empty_tables() -> None:
    rows = L.lab_rows(PatientRecord("x"))
    assert rows.empty and L.latest_per_item(rows).empty


# ----------------------------------------------------------------------------------------- notes

HOSTILE = 'a <script>alert(1)</script> b <img src=x onerror="alert(2)"> & "q" \'s\''


def test_plain_note_is_fully_escaped() -> None:
    out = N.highlight_spans(HOSTILE, [])
    assert out == html.escape(HOSTILE)
    assert "<script" not in out and "<img" not in out


def test_hostile_text_inside_and_between_spans_stays_escaped() -> None:
    start = HOSTILE.index("<script>")
    spans = [(start, start + len("<script>alert(1)</script>"), 0.9), (HOSTILE.index("<img"), HOSTILE.index("<img") + 4, -0.3)]
    out = N.highlight_spans(HOSTILE, spans)
    assert "<script" not in out.lower() and "<img" not in out.lower()
    marks = re.findall(r"<mark [^>]*>(.*?)</mark>", out)
    assert marks == [html.escape("<script>alert(1)</script>"), html.escape("<img")]
    # only our own tags survive
    assert set(re.findall(r"<\s*/?\s*([a-zA-Z]+)", out)) == {"mark"}
    html_note = N.note_html("+1.0 h · <b>cat</b>", HOSTILE, spans)
    assert "<script" not in html_note and "&lt;b&gt;cat&lt;/b&gt;" in html_note
    assert "white-space:pre-wrap" in html_note


def _marked(out: str) -> list[tuple[str, float]]:
    return [(html.unescape(t), float(w)) for w, t in re.findall(r'<mark data-w="([^"]+)"[^>]*>(.*?)</mark>', out)]


def test_spans_are_marked_at_the_right_places_with_weight_and_sign() -> None:
    text = "fever and cough; no rash"
    out = N.highlight_spans(text, [(0, 5, 1.0), (10, 15, -0.5)])
    assert _marked(out) == [("fever", 1.0), ("cough", -0.5)]
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == text  # nothing lost or added
    first, second = re.findall(r"<mark [^>]*>", out)
    assert "rgba(230, 97, 1, 0.85)" in first  # strongest positive: full orange
    assert "rgba(59, 76, 192, 0.425)" in second  # half as strong, negative: blue at half opacity


def test_overlapping_and_adjacent_spans() -> None:
    text = "abcdefghij"
    out = N.highlight_spans(text, [(0, 6, 1.0), (3, 8, 1.0), (8, 10, 0.5)])
    # cut at every boundary; the overlap carries both weights; adjacent spans stay separate marks
    assert _marked(out) == [("abc", 1.0), ("def", 2.0), ("gh", 1.0), ("ij", 0.5)]
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == text


def test_unicode_offsets_newlines_and_out_of_range_spans() -> None:
    text = "Ünïcødé ✓\n日本語 <ok>\n"
    start = text.index("日本語")
    out = N.highlight_spans(text, [(start, start + 3, 1.0), (text.index("<ok>"), text.index("<ok>") + 4, 1.0),
                                   (50, 60, 1.0), (5, 5, 1.0), (-3, 1, 0.2)])
    assert _marked(out) == [("Ü", 0.2), ("日本語", 1.0), ("<ok>", 1.0)]
    assert "\n" in out and "&lt;ok&gt;" in out


def test_find_spans_is_case_insensitive_and_literal() -> None:
    text = "Cough. cough? (c.o)"
    assert N.find_spans(text, "COUGH") == [(0, 5, 1.0), (7, 12, 1.0)]
    assert N.find_spans(text, "c.o") == [(15, 18, 1.0)]
    assert N.find_spans(text, "  ") == []


# ---------------------------------------------------------------------------------------- vitals


def _subplot_titles(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def _svg(record: PatientRecord) -> ET.Element:
    """vitals_svg parsed as XML (it must be well-formed for the browser to draw it)."""
    return ET.fromstring(V.vitals_svg(record))


def _tag(element: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in element.iter() if e.tag.rsplit("}", 1)[-1] == name]


def test_vitals_one_cell_per_channel_present_with_normal_bands() -> None:
    record = _record()
    svg = _svg(record)
    assert V.channels_present(record) == ["Heart Rate", "Systolic blood pressure", "Glascow coma scale total"]
    titles = [t.text for t in _tag(svg, "text") if t.get("font-size") == "11"]
    assert titles == ["HR (bpm)", "SBP (mmHg)", "GCS total (score)"]
    assert len([r for r in _tag(svg, "rect") if r.get("fill") == V.BAND]) == 3  # one normal band per channel
    lines = _tag(svg, "polyline")
    assert len(lines) == 3
    hr, gcs = lines[0].get("points").split(), lines[2].get("points").split()
    assert len(hr) == 25 and len(gcs) == 2 * 25 - 1  # GCS as a step plot of its score: a corner per change
    first = [float(c.get("cx")) for c in _tag(svg, "circle")[:3]]  # HR at 0, 2 and 4 h: evenly spaced
    assert first[1] - first[0] == pytest.approx(first[2] - first[1], abs=0.11) and first[1] > first[0]
    readings = V.readings_frame(record)  # the exact values, with their hours, in the page's table
    assert list(readings.columns) == ["h", "time", "sign", "value", "unit"] and len(readings) == 3 * 25
    assert readings.iloc[0].to_dict() == {"h": 0.0, "time": "2131-05-07 08:00", "sign": "Glasgow coma scale total",
                                          "value": "15", "unit": "score"}
    assert "Height" not in set(readings["sign"])
    red = [c for c in _tag(svg, "circle") if c.get("fill") == V.OUT_OF_BAND]
    assert len(red) == 14 + 15  # HR above 100 from 22 h on, GCS 11 (below its normal 15) from 20 h on
    dotted = [ln for ln in _tag(svg, "line") if ln.get("stroke-dasharray")]
    assert len(dotted) == 2 * 3  # 0 h and the end of the model's window, in each cell
    assert V.body_size(record) == {"height": "178 cm", "weight": "81.5 kg"}


def test_vitals_normal_bands_cover_the_agreed_channels() -> None:
    bands = {c: d.normal for c, d in V.CHANNEL_DISPLAY.items()}
    assert bands["Heart Rate"] == (60, 100) and bands["Oxygen saturation"] == (94, 100)
    assert bands["Temperature"] == (36.0, 38.0) and bands["pH"] == (7.35, 7.45)
    assert bands["Fraction inspired oxygen"] is None


def test_vitals_effect_strip_colours_each_hour_of_each_channel_and_says_the_strongest() -> None:
    """One row per channel (the small multiples' order), one cell per hour of the window, coloured as every
    panel colours a signed weight; hours without a weight stay grey; the strongest runs of hours in words
    (issue 18: not drawn inside the vitals chart, which is the same for every disease)."""
    record = _record()
    attribution = {"Heart Rate": [0.0, 0.5, -1.0], "Glascow coma scale total": {30: 0.25, 31: 0.3, 60: 9.0}}
    svg = ET.fromstring(V.effect_strip_svg(record, attribution))
    hours = int(V.WINDOW_HOURS)
    cells = [r.get("fill") for r in _tag(svg, "rect")]
    assert len(cells) == 3 * hours  # HR, SBP, GCS total x 48 hours
    assert [t.text for t in _tag(svg, "text")][:3] == ["HR", "SBP", "GCS total"]
    hr, sbp, gcs = cells[:hours], cells[hours:2 * hours], cells[2 * hours:]
    assert hr[0] == "#f2f2f2" and hr[1] == signed_rgba(0.5, 1.0, MAX_ALPHA) and hr[2] == signed_rgba(-1.0, 1.0, MAX_ALPHA)
    assert set(sbp) == {"#f2f2f2"} and gcs[30] == signed_rgba(0.25, 1.0, MAX_ALPHA)  # 60 h: outside the window
    assert V.effect_summary(record, attribution) == ("Moved the risk most: HR 2-3 h lowered it (strong); "
                                                     "GCS total 30-32 h raised it (moderate); HR 1-2 h raised it "
                                                     "(strong).")
    assert V.effect_strip_svg(record, {"Heart Rate": [0.0]}) == "" and V.effect_summary(record, {}) == ""


def test_vitals_absent_gives_no_chart() -> None:
    assert V.vitals_svg(PatientRecord("x")) == ""


def test_vitals_chart_escapes_what_comes_from_the_data_and_is_sent_as_an_image() -> None:
    """Channel names are data: escaped and kept on one line; the page sends the chart as an <img> (a data: URI)
    that st.html's sanitiser keeps and the browser draws without parsing its nodes as HTML."""
    import base64

    rows = [(T0, "<script>x</script>\n\n**bold**", 1.0, "1"), (T0, "Heart Rate", 80.0, "80")]
    record = _record(vitals=Vitals(pd.DataFrame(rows, columns=["time", "channel", "value", "value_text"])))
    svg = V.vitals_svg(record)
    assert "<script" not in svg and "\n" not in svg and "&lt;script&gt;x&lt;/script&gt; **bold**" in svg
    ET.fromstring(svg)  # well-formed
    img = V.svg_image_html(svg)
    assert img.startswith('<img class="mf-vitals" alt="Vital signs over time" src="data:image/svg+xml;base64,')
    assert base64.b64decode(img.split("base64,", 1)[1].split('"', 1)[0]).decode() == svg


# ------------------------------------------------------------------------------------------ xray


def test_window_level_maps_centre_to_mid_grey_and_saturates_outside() -> None:
    pixels = np.array([[0.3, 0.4, 0.5, 0.6, 0.7]], dtype=np.float32)
    out = X.window_level(pixels, centre=0.5, width=0.2)
    assert out[0, 2] == pytest.approx(0.5)
    assert out[0, 0] == 0.0 and out[0, 4] == 1.0  # outside the window: black / white
    assert out[0, 1] == pytest.approx(0.0) and out[0, 3] == pytest.approx(1.0)  # window edges
    np.testing.assert_allclose(X.window_level(pixels, 0.5, 1.0), pixels)  # full window = identity


def _film(fig) -> np.ndarray:
    """The grey levels the viewer's film shows, decoded from the PNG it is sent as."""
    import base64
    import io

    from PIL import Image

    uri = fig.data[0].source
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_downsampling_bounds_display_size() -> None:
    pixels = np.random.default_rng(0).random((2000, 1500), dtype=np.float32)
    fig = X.xray_figure(pixels)
    z = _film(fig)
    assert max(z.shape) <= X.MAX_DISPLAY_SIDE and z.dtype == np.uint8
    assert fig.data[0].dx == fig.data[0].dy == 3 and fig.data[0].x0 == 1.0  # block centres, original coordinates
    assert X.downsample(np.ones((5, 7)), 2).shape == (3, 4)


def _decoded(uri: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_viewer_is_zoomable_with_equal_aspect_and_overlay() -> None:
    pixels = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    overlay = np.zeros_like(pixels)
    overlay[10:20, 5:15] = 1.0
    fig = X.xray_figure(pixels, overlay=overlay, overlay_opacity=0.3, signed=False)
    film, wash, values = fig.data
    z = _film(fig)  # the ramp, full window: 0 (black) at the first pixel to 255 (white) at the last
    assert film.type == "image" and z.shape == (64, 48) and z[0, 0] == 0 and z[-1, -1] == 255
    np.testing.assert_allclose(z / 255, pixels, atol=0.5 / 255 + 1e-6)
    rgba = _decoded(wash.source)  # the colour wash: orange where the evidence is, transparent elsewhere
    assert wash.type == "image" and rgba.shape == (64, 48, 4) and wash.opacity == 0.3 and wash.hoverinfo == "skip"
    assert (rgba[10:20, 5:15, 3] == 255).all() and (rgba[:10, :, 3] == 0).all() and (rgba[30:, :, 3] == 0).all()
    assert tuple(rgba[12, 7, :3]) == POSITIVE_RGB
    assert values.type == "heatmap" and values.opacity == 0 and values.showscale  # hover values + colour bar
    assert np.asarray(values.z).shape == pixels.shape and values.zmax == 1.0
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.fixedrange is False
    assert fig.layout.xaxis.fixedrange is False
    assert list(fig.layout.yaxis.range) == [63.5, -0.5]  # row 0 at the top
    with pytest.raises(ValueError, match="does not match"):
        X.xray_figure(pixels, overlay=np.zeros((10, 10)))


def test_signed_overlay_is_orange_up_blue_down_with_opacity_by_strength() -> None:
    overlay = np.zeros((8, 8), dtype=np.float32)
    overlay[0, 0], overlay[7, 7], overlay[4, 4] = 2.0, -1.0, float("nan")
    _, wash, values = X.xray_figure(np.zeros((8, 8), np.float32), overlay=overlay, signed=True).data
    rgba = _decoded(wash.source)
    assert tuple(rgba[0, 0]) == (*POSITIVE_RGB, round(255 * MAX_ALPHA))
    assert tuple(rgba[7, 7]) == (*NEGATIVE_RGB, round(255 * MAX_ALPHA / 2))
    assert rgba[4, 4, 3] == 0 and rgba[1, 1, 3] == 0  # NaN and zero: transparent
    assert (values.zmin, values.zmax) == (-2.0, 2.0) and values.colorscale[0][1].startswith("rgba(59,76,192")


def test_overlay_is_sent_coarser_than_a_large_film_and_still_lines_up() -> None:
    """Issue 18: a 512 px film's colour wash goes at 256 px (block means of 2 x 2), its hover values at 64 px,
    both in the film's coordinates."""
    pixels = np.zeros((512, 512), dtype=np.float32)
    overlay = np.zeros_like(pixels)
    overlay[100:104, 300:304] = 2.0  # one 4 x 4 hot spot = two 2 x 2 blocks a side
    film, wash, values = X.xray_figure(pixels, overlay=overlay, signed=False).data
    rgba = _decoded(wash.source)
    assert film.dx == 1 and rgba.shape == (X.MAX_OVERLAY_SIDE, X.MAX_OVERLAY_SIDE, 4)
    assert wash.dx == wash.dy == 2 and wash.x0 == wash.y0 == 0.5  # block centres in the film's coordinates
    rows, cols = np.nonzero(rgba[..., 3])
    assert set(rows) == {50, 51} and set(cols) == {150, 151}  # film rows 100-103, columns 300-303
    z = np.asarray(values.z)
    assert z.shape == (X.HOVER_OVERLAY_SIDE, X.HOVER_OVERLAY_SIDE) and values.zmax == pytest.approx(2.0)
    r, c = np.nonzero(z)
    assert set(np.asarray(values.y)[r]) == {99.5} and set(np.asarray(values.x)[c]) == {299.5}  # one 8 x 8 block
    assert np.asarray(values.x)[0] == 3.5 and np.asarray(values.x)[-1] == 507.5  # spans the film's width


def test_image_metadata_table() -> None:
    meta = ImageMetadata(modality="DX", view_position="PA", study_date="2131-05-07", pixel_spacing_mm=(0.14, 0.14),
                         photometric="MONOCHROME1", bits_stored=12, file_format="dicom", rows=8, columns=6)
    image = ChestImage(T0, "PA", np.zeros((8, 6), np.float32), "x.dcm", meta)
    facts = dict(X.metadata_frame(image).values)
    assert facts["pixel spacing"] == "0.14 × 0.14 mm" and facts["photometric"] == "MONOCHROME1"
    assert facts["bits stored"] == "12" and facts["size"] == "6 × 8 px" and facts["study date"] == "2131-05-07"
    bare = dict(X.metadata_frame(ChestImage(None, "", np.zeros((4, 4), np.float32))).values)
    assert bare["modality"] == "not given" and bare["pixel spacing"] == "not given"


# ---------------------------------------------------------------------------------------- header


def test_header_modalities_and_problems() -> None:
    record = _record(source="/data/P1", problems=[warning("/data/P1/images/index.csv", "row 2: file", "bad <file>")])
    status = H.modality_status(record).set_index("code")
    assert status.loc["LAB", "present"] and not status.loc["CXR", "present"]
    assert status.loc["VIT", "count"] == len(record.vitals.table)
    badges = H.modality_badges_html(record)
    assert "LAB 6" in badges and "line-through" in badges and "absent: chest X-ray" in badges
    problems = H.problems_frame(record)
    assert problems.iloc[0].to_dict() == {"severity": "warning", "file": "images/index.csv",
                                          "field": "row 2: file", "message": "bad <file>"}
    assert H.demographics_line(PatientRecord("x")) == "age unknown · sex unknown · admission time unknown"
    assert H.demographics_line(record, {"height": "178 cm"}) == "71 y · F · admitted 2131-05-07 08:00 · height 178 cm"
