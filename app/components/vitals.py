"""Vital-signs panel: small multiples drawn as one inline SVG, one cell per channel present in the record.

x is hours from the index time; the model's 0-48 h window is marked; a shaded band shows the
display-normal range of each channel; categorical channels (GCS, capillary refill) are step plots of
their score. The attribution per hour is a strip of coloured cells above the plots (effect_strip_svg),
said in words by effect_summary.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.components.shading import MAX_ALPHA, effect_words, max_abs, signed_rgba
from medfuse_core.features import window
from medfuse_core.record import PatientRecord
from medfuse_core.sources.vital_channels import channel_spec

WINDOW_HOURS = window.HOURS  # the model reads the first 48 h in 1-hour bins (medfuse_core/features/window.py)
# The x axis spans at most this far before/after admission: one row 17 years away would otherwise stretch
# it over 144,000 hours of 12-hour ticks (a browser froze for over a minute). Rows beyond are said, not drawn.
AXIS_LIMIT_HOURS = 30 * 24


@dataclass(frozen=True)
class ChannelDisplay:
    label: str  # short label a clinician reads at a glance
    unit: str
    normal: tuple[float, float] | None  # display-normal band, None where no single band makes sense


# Display-normal bands for adult ICU patients. These are *display* aids (a shaded band behind the
# trace), not the model's normal values nor the benchmark's validity limits: HR 60-100 bpm,
# SBP 90-140, DBP 60-90, MAP 65-105 mmHg, RR 12-20 /min, SpO2 94-100 %, temperature 36.0-38.0 C,
# glucose 70-180 mg/dL (the ICU glycaemic target), pH 7.35-7.45; FiO2 has no normal (it is a
# setting, 0.21 on room air); GCS total normal is 15 and each GCS component's normal is its best
# score (4 / 6 / 5), drawn as a half-point band around that score; capillary refill normal is 0 (< 2 s).
# Order = the order of the small multiples (haemodynamics, respiration, temperature, metabolic,
# neurology, body size).
CHANNEL_DISPLAY: dict[str, ChannelDisplay] = {
    "Heart Rate": ChannelDisplay("HR", "bpm", (60, 100)),
    "Systolic blood pressure": ChannelDisplay("SBP", "mmHg", (90, 140)),
    "Diastolic blood pressure": ChannelDisplay("DBP", "mmHg", (60, 90)),
    "Mean blood pressure": ChannelDisplay("MAP", "mmHg", (65, 105)),
    "Respiratory rate": ChannelDisplay("RR", "/min", (12, 20)),
    "Oxygen saturation": ChannelDisplay("SpO2", "%", (94, 100)),
    "Fraction inspired oxygen": ChannelDisplay("FiO2", "fraction", None),
    "Temperature": ChannelDisplay("Temp", "°C", (36.0, 38.0)),
    "Glucose": ChannelDisplay("Glucose", "mg/dL", (70, 180)),
    "pH": ChannelDisplay("pH", "", (7.35, 7.45)),
    "Glascow coma scale total": ChannelDisplay("GCS total", "score", (14.5, 15.0)),
    "Glascow coma scale eye opening": ChannelDisplay("GCS eye", "score", (3.5, 4.0)),
    "Glascow coma scale motor response": ChannelDisplay("GCS motor", "score", (5.5, 6.0)),
    "Glascow coma scale verbal response": ChannelDisplay("GCS verbal", "score", (4.5, 5.0)),
    "Capillary refill rate": ChannelDisplay("Cap refill", "0 normal / 1 slow", (0.0, 0.5)),
}

# Fixed y ranges for scores, so "15" always sits at the top of the GCS plot.
SCORE_RANGES = {
    "Glascow coma scale total": (2.5, 15.5),
    "Glascow coma scale eye opening": (0.5, 4.5),
    "Glascow coma scale motor response": (0.5, 6.5),
    "Glascow coma scale verbal response": (0.5, 5.5),
    "Capillary refill rate": (-0.25, 1.25),
}

LINE = "#1f4e79"
OUT_OF_BAND = "#c0392b"
BAND = "rgba(46, 160, 67, 0.13)"

# Attribution: channel -> per-hour weights, either a sequence (index = hour bin 0..47) or {hour: w}.
VitalAttribution = Mapping[str, Sequence[float] | Mapping[int, float]]

# Charted once at admission, not a time series: shown in the patient header, not as a subplot.
BODY_SIZE_CHANNELS = ("Height", "Weight")


def channels_present(record: PatientRecord) -> list[str]:
    """Time-series channels with at least one observation: known ones in display order, then others.
    Height and weight are left out (see BODY_SIZE_CHANNELS)."""
    present = [c for c in dict.fromkeys(record.vitals.table["channel"]) if c not in BODY_SIZE_CHANNELS]
    known = [c for c in CHANNEL_DISPLAY if c in present]
    return known + sorted(c for c in present if c not in CHANNEL_DISPLAY)


def channel_name(channel: str) -> str:
    """A channel's name as shown: the benchmark resources spell Glasgow "Glascow" (their key is kept)."""
    return str(channel).replace("Glascow", "Glasgow")


def hour_step(span_hours: float, max_ticks: int = 8) -> int:
    """Tick spacing in hours so a stay of any length gets at most ~`max_ticks` readable labels
    (12 h for the 48 h window, a day or a week for a long stay)."""
    for step in (6, 12, 24, 48, 72, 168, 336, 720):
        if span_hours / step <= max_ticks:
            return step
    return int(math.ceil(span_hours / max_ticks / 720.0) * 720)


def display_of(channel: str) -> ChannelDisplay:
    return CHANNEL_DISPLAY.get(channel, ChannelDisplay(channel_name(channel), "", None))


def _hour_weights(weights: Sequence[float] | Mapping[int, float]) -> dict[int, float]:
    if isinstance(weights, Mapping):
        return {int(h): float(w) for h, w in weights.items()}
    return {h: float(w) for h, w in enumerate(weights)}


def body_size(record: PatientRecord) -> dict[str, str]:
    """Latest height and weight as display text ("178 cm"), for the header; only those charted."""
    table = record.vitals.table
    out = {}
    for channel, unit in (("Height", "cm"), ("Weight", "kg")):
        rows = table[table["channel"] == channel].sort_values("time")
        if len(rows):
            out[channel.lower()] = f"{rows['value'].iloc[-1]:g} {unit}"
    return out


def drawable_hours(record: PatientRecord) -> tuple[np.ndarray, np.ndarray]:
    """(hours from the index time for every vitals row, whether the row is drawn): rows with no
    usable time, or beyond AXIS_LIMIT_HOURS, are not."""
    hours = np.asarray(record.hours_since_index(record.vitals.table["time"]), dtype=float)
    return hours, np.isfinite(hours) & (np.abs(hours) <= AXIS_LIMIT_HOURS)


def not_drawn_note(record: PatientRecord) -> str:
    """What the vitals figure leaves out, in words ('' when it draws every row)."""
    table = record.vitals.table
    rows = ~table["channel"].isin(BODY_SIZE_CHANNELS).to_numpy()
    if not rows.any():
        return ""
    if record.index_time is None or pd.isna(record.index_time):
        return ("The admission (index) time is unknown, so the vital signs cannot be placed in hours from "
                "admission: none are drawn. Fix index_time in patient.json.")
    hours, drawn = drawable_hours(record)
    missing = int((rows & ~np.isfinite(hours)).sum())
    far = int((rows & np.isfinite(hours) & ~drawn).sum())
    parts = []
    if far:
        extreme = float(np.nanmax(np.abs(hours[rows & np.isfinite(hours) & ~drawn])))
        parts.append(f"{far} observation{'s' if far != 1 else ''} more than {AXIS_LIMIT_HOURS // 24} days from "
                     f"admission (up to {extreme / 24 / 365.25:.1f} years) {'are' if far != 1 else 'is'} not drawn")
    if missing:
        parts.append(f"{missing} observation{'s' if missing != 1 else ''} without a usable time "
                     f"{'are' if missing != 1 else 'is'} not drawn")
    return "; ".join(parts) + "." if parts else ""


def vitals_svg(record: PatientRecord, *, columns: int = 2, width: int = 560, cell_height: int = 118) -> str:
    """Small multiples of the record's vital-sign time series as one inline SVG (one cell per channel present,
    `columns` across, scaled to the column's width): the normal band, the model's window (dotted lines at 0
    and WINDOW_HOURS h, grey after it), the trace (a step line for scores) with its points, red outside the
    band; '' when there is no channel. The same for every
    disease (the attribution is effect_strip_svg's).

    Plain SVG, not Plotly: eleven Plotly subplots took the browser ~0.4 s to draw when a review opened, on
    the 2-core machine (issue 18). The page shows it as an image (svg_image_html): parsed as HTML through
    st.markdown it still cost ~0.14 s. Every text from the data is escaped (_text); every other value is a
    number we format. Exact values are in the page's table of the readings, not in tooltips."""
    channels = channels_present(record)
    if not channels:
        return ""
    table = record.vitals.table
    hours_all, drawn = drawable_hours(record)
    spec = channel_spec()
    values_all = table["value"].to_numpy(dtype=float)
    finite = hours_all[drawn]
    x_lo = min(0.0, float(finite.min()) if finite.size else 0.0) - 1
    x_hi = max(float(WINDOW_HOURS), float(finite.max()) if finite.size else 0.0) + 1
    step = hour_step(x_hi - x_lo, 6 if columns > 1 else 10)
    cols = min(columns, len(channels))
    rows = math.ceil(len(channels) / cols)
    gap, left, top, bottom = 14, 34, 18, 18
    cell_w = (width - gap * (cols - 1)) / cols
    plot_w, plot_h = cell_w - left - 4, cell_height - top - bottom
    out = [f'<svg viewBox="0 0 {width} {rows * cell_height + 14}" width="{width}" height="{rows * cell_height + 14}" '
           'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Vital signs over time" '
           'style="font-family:sans-serif;font-size:10px">']
    for k, channel in enumerate(channels):
        row, col = divmod(k, cols)
        x0, y0 = col * (cell_w + gap) + left, row * cell_height + top
        mask = (table["channel"] == channel).to_numpy() & drawn
        x, y = hours_all[mask], values_all[mask]
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        shown = display_of(channel)
        band = shown.normal
        y_lo, y_hi = _y_range(channel, y, band)

        def px(h: float) -> float:
            return round(x0 + (h - x_lo) / (x_hi - x_lo) * plot_w, 1)

        def py(v: float) -> float:
            return round(y0 + plot_h - (min(max(v, y_lo), y_hi) - y_lo) / (y_hi - y_lo) * plot_h, 1)

        title = f"{shown.label} ({shown.unit})" if shown.unit else shown.label
        out.append(f'<text x="{round(x0 + plot_w / 2, 1)}" y="{y0 - 5}" text-anchor="middle" font-size="11" '
                   f'fill="#333">{_text(title)}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{round(plot_w, 1)}" height="{plot_h}" fill="white" '
                   'stroke="#ddd"/>')
        if band is not None:
            top_y, low_y = py(band[1]), py(band[0])
            out.append(f'<rect x="{x0}" y="{top_y}" width="{round(plot_w, 1)}" height="{round(low_y - top_y, 1)}" '
                       f'fill="{BAND}"/>')
        if x_hi > WINDOW_HOURS:  # after the model's window: greyed, still shown
            out.append(f'<rect x="{px(WINDOW_HOURS)}" y="{y0}" width="{round(px(x_hi) - px(WINDOW_HOURS), 1)}" '
                       f'height="{plot_h}" fill="rgba(0,0,0,0.05)"/>')
        for h in (0, WINDOW_HOURS):
            out.append(f'<line x1="{px(h)}" x2="{px(h)}" y1="{y0}" y2="{y0 + plot_h}" stroke="#888" '
                       'stroke-dasharray="2,2"/>')
        for tick in _ticks(y_lo, y_hi, channel):
            out.append(f'<text x="{x0 - 3}" y="{py(tick) + 3}" text-anchor="end" fill="#666">{tick:g}</text>')
        last_row = k + cols >= len(channels)
        first_tick = math.ceil(x_lo / step) * step
        for h in range(int(first_tick), int(x_hi) + 1, step):
            out.append(f'<line x1="{px(h)}" x2="{px(h)}" y1="{y0 + plot_h}" y2="{y0 + plot_h + 3}" stroke="#999"/>')
            if last_row:
                out.append(f'<text x="{px(h)}" y="{y0 + plot_h + 13}" text-anchor="middle" fill="#666">{h} h</text>')
        if not len(x):
            continue
        categorical = channel in spec and spec[channel].categorical
        points = []
        for i, (h, v) in enumerate(zip(x, y)):
            if not math.isfinite(v):
                continue
            if categorical and points:  # a score holds until the next one: a step
                points.append(f"{px(h)},{points[-1].split(',')[1]}")
            points.append(f"{px(h)},{py(v)}")
        out.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{LINE}" stroke-width="1.3"/>')
        outside = np.zeros(len(y), dtype=bool) if band is None else (y < band[0] - 1e-9) | (y > band[1] + 1e-9)
        marked = np.flatnonzero(np.isfinite(y)) if len(y) <= MAX_MARKERS else np.flatnonzero(outside)[:MAX_MARKERS]
        for i in marked:
            out.append(f'<circle cx="{px(x[i])}" cy="{py(y[i])}" r="2.2" fill="{OUT_OF_BAND if outside[i] else LINE}"/>')
    out.append(f'<text x="{width / 2}" y="{rows * cell_height + 11}" text-anchor="middle" fill="#555">'
               "hours from admission</text></svg>")
    return "".join(out)


def _text(value: object) -> str:
    """Text from the data for the SVG: escaped, whitespace (newlines included) collapsed to single spaces."""
    return html.escape(" ".join(str(value).split()))


MAX_MARKERS = 300  # points drawn per channel; a longer series keeps its line and its red points


def svg_image_html(svg: str, label: str = "Vital signs over time", css_class: str = "mf-vitals") -> str:
    """An SVG as an <img> (a data: URI): the browser draws it natively, with no HTML parsing of its nodes, and
    st.html's sanitiser (which drops inline SVG) keeps it."""
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f'<img class="{css_class}" alt="{html.escape(label)}" src="data:image/svg+xml;base64,{data}" '
            'style="width:100%;height:auto">')


def readings_frame(record: PatientRecord) -> pd.DataFrame:
    """Every vital-sign reading as a clinician reads it: hours from admission, time, channel, value as charted."""
    table = record.vitals.table
    keep = ~table["channel"].isin(BODY_SIZE_CHANNELS).to_numpy()
    hours = np.asarray(record.hours_since_index(table["time"]), dtype=float)[keep]
    rows = table[keep]
    frame = pd.DataFrame({"h": np.round(hours, 1), "time": rows["time"].astype(str).str[:16].to_numpy(),
                          "sign": [channel_name(c) for c in rows["channel"]],
                          "value": rows["value_text"].astype(str).to_numpy(),
                          "unit": [display_of(c).unit for c in rows["channel"]]})
    return frame.sort_values(["h", "sign"], kind="stable", na_position="last").reset_index(drop=True)


def _y_range(channel: str, y: np.ndarray, band: tuple[float, float] | None) -> tuple[float, float]:
    """A channel's y range: its fixed score range, else its values and normal band, padded by 8 %."""
    if channel in SCORE_RANGES:
        return SCORE_RANGES[channel]
    values = y[np.isfinite(y)]
    if band is not None:
        values = np.append(values, band)
    if not len(values):
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, channel: str) -> list[float]:
    """Three to five readable y ticks inside [lo, hi] (every score for the GCS components, 3/6/9/12/15 for
    the total)."""
    if channel in SCORE_RANGES:
        every = 3 if channel == "Glascow coma scale total" else 1
        return [float(v) for v in range(math.ceil(lo), math.floor(hi) + 1) if v % every == 0]
    raw = (hi - lo) / 3
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) // step) + 1)]


def _effect_weights(record: PatientRecord, attribution: VitalAttribution) -> tuple[list[str], dict, float]:
    """(channels present, {channel: {hour: weight}} inside the window, largest |weight|)."""
    channels = channels_present(record)
    weights = {c: {h: w for h, w in _hour_weights(attribution.get(c, ())).items()
                   if 0 <= h < WINDOW_HOURS and w and math.isfinite(w)} for c in channels}
    return channels, weights, max_abs(w for ws in weights.values() for w in ws.values())


def effect_strip_svg(record: PatientRecord, attribution: VitalAttribution, width: int = 560) -> str:
    """How each vital sign moved the risk, hour by hour over the model's window, as one SVG: one row per
    channel in the small multiples' order, one cell per hour, orange raises / blue lowers with opacity by
    strength (the shading convention of every panel); '' when no hour has a weight. The page sends it as an
    image with effect_summary's words under it: as ~550 HTML cells with tooltips it cost Chromium ~50 ms of
    every disease switch (issue 18)."""
    channels, weights, scale = _effect_weights(record, attribution)
    if scale <= 0:
        return ""
    label_w, row_h, hours = 72, 13, int(WINDOW_HOURS)
    cell_w = (width - label_w) / hours
    out = [f'<svg viewBox="0 0 {width} {len(channels) * row_h + 14}" width="{width}" '
           f'height="{len(channels) * row_h + 14}" xmlns="http://www.w3.org/2000/svg" '
           'style="font-family:sans-serif;font-size:10px">']
    for r, channel in enumerate(channels):
        y = r * row_h
        out.append(f'<text x="0" y="{y + 10}" fill="#444">{_text(display_of(channel).label)}</text>')
        for hour in range(hours):
            w = weights[channel].get(hour)
            fill = "#f2f2f2" if w is None else signed_rgba(w, scale, MAX_ALPHA)
            out.append(f'<rect x="{round(label_w + hour * cell_w, 2)}" y="{y}" width="{round(cell_w - 1, 2)}" '
                       f'height="{row_h - 1}" fill="{fill}"/>')
    for h in range(0, hours + 1, 12):
        anchor = "end" if h == hours else "start"
        out.append(f'<text x="{round(label_w + h * cell_w, 2)}" y="{len(channels) * row_h + 11}" '
                   f'text-anchor="{anchor}" fill="#666">{h} h</text>')
    out.append("</svg>")
    return "".join(out)


def effect_summary(record: PatientRecord, attribution: VitalAttribution, most: int = 3) -> str:
    """The strip in words: the `most` strongest runs of consecutive hours of one sign, e.g. "SpO2 36-47 h
    raised the risk (strong); GCS total 30-39 h lowered it (moderate)." ('' without a weight)."""
    channels, weights, scale = _effect_weights(record, attribution)
    if scale <= 0:
        return ""
    runs = []  # (total |weight|, channel, first hour, last hour, peak weight)
    for channel in channels:
        hours = weights[channel]
        for first in sorted(hours):
            if first - 1 in hours and (hours[first - 1] > 0) == (hours[first] > 0):
                continue  # not the start of a run
            last = first
            while last + 1 in hours and (hours[last + 1] > 0) == (hours[first] > 0):
                last += 1
            span = [hours[h] for h in range(first, last + 1)]
            runs.append((sum(abs(v) for v in span), channel, first, last, max(span, key=abs)))
    parts = []
    for _, channel, first, last, peak in sorted(runs, key=lambda r: -r[0])[:most]:
        when = f"{first}-{last + 1} h"
        strength = effect_words(peak, scale).split(", ")[1]
        parts.append(f"{display_of(channel).label} {when} {'raised' if peak > 0 else 'lowered'} it ({strength})")
    return "Moved the risk most: " + "; ".join(parts) + "."
