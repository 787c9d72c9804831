"""Vital-signs panel: plotly small multiples, one subplot per channel present in the record.

x is hours from the index time; the model's 0-48 h window is marked; a shaded band shows the
display-normal range of each channel; categorical channels (GCS, capillary refill) are step plots of
their score. The attribution per hour is a strip of coloured cells above the plots (effect_strip_html).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.components.shading import MAX_ALPHA, effect_words, max_abs, signed_rgba
from medfuse_core.features import window
from medfuse_core.record import PatientRecord
from medfuse_core.sources.vital_channels import channel_spec

WINDOW_HOURS = window.HOURS  # the model reads the first 48 h in 1-hour bins (medfuse_core/features/window.py)
# The x axis spans at most this far before/after admission: one row 17 years away would otherwise stretch
# it over 144,000 hours of 12-hour ticks (a browser froze for over a minute). Rows beyond are said, not drawn.
AXIS_LIMIT_HOURS = 30 * 24
MAX_TICKS = 24


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


def _axis_ref(k: int) -> tuple[str, str]:
    return ("x" if k == 1 else f"x{k}"), ("y" if k == 1 else f"y{k}")


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


def vitals_figure(record: PatientRecord, *, columns: int = 2, row_height: int = 150) -> go.Figure:
    """Small multiples of the record's vital-sign time series (one subplot per channel present);
    an empty figure (no subplots) when there are none. The same for every disease: the attribution is
    effect_strip_html's, so a disease switch does not make the browser redraw a dozen subplots (issue 18)."""
    channels = channels_present(record)
    if not channels:
        return go.Figure()
    table = record.vitals.table
    hours_all, drawn = drawable_hours(record)
    spec = channel_spec()
    cols = min(columns, len(channels))
    rows = math.ceil(len(channels) / cols)
    titles = [f"{display_of(c).label} ({display_of(c).unit})" if display_of(c).unit else display_of(c).label
              for c in channels]
    layout = _grid_layout(rows, cols, titles, vertical_spacing=min(0.3 / rows, 0.08), horizontal_spacing=0.08)
    finite = hours_all[drawn]
    x_lo = min(0.0, float(finite.min()) if finite.size else 0.0) - 1
    x_hi = max(float(WINDOW_HOURS), float(finite.max()) if finite.size else 0.0) + 1
    shapes: list[dict] = []
    traces: list[go.Scatter] = []
    cells: list[tuple[int, int]] = []
    yaxes: dict[str, dict] = {}
    for k, channel in enumerate(channels, start=1):
        row, col = (k - 1) // cols + 1, (k - 1) % cols + 1
        xref, yref = _axis_ref(k)
        mask = (table["channel"] == channel).to_numpy() & drawn
        x, y = hours_all[mask], table["value"].to_numpy(dtype=float)[mask]
        text = table["value_text"].to_numpy()[mask]
        order = np.argsort(x, kind="stable")
        x, y, text = x[order], y[order], text[order]
        shown = display_of(channel)
        categorical = channel in spec and spec[channel].categorical
        band = shown.normal
        outside = np.zeros(len(y), dtype=bool) if band is None else (y < band[0] - 1e-9) | (y > band[1] + 1e-9)
        traces.append(go.Scatter(
            x=x, y=y, mode="lines+markers", name=shown.label, showlegend=False,
            line={"color": LINE, "width": 1.5, "shape": "hv" if categorical else "linear"},
            marker={"size": 4, "color": np.where(outside, OUT_OF_BAND, LINE)},
            customdata=text,
            hovertemplate=f"{shown.label}: %{{customdata}} {shown.unit}<br>%{{x:+.1f}} h<extra></extra>",
        ))
        cells.append((row, col))
        if band is not None:
            shapes.append({"type": "rect", "xref": f"{xref} domain", "yref": yref, "x0": 0, "x1": 1,
                           "y0": band[0], "y1": band[1], "fillcolor": BAND, "line": {"width": 0},
                           "layer": "below"})
        if x_hi > WINDOW_HOURS:  # after the model's window: greyed, still shown
            shapes.append({"type": "rect", "xref": xref, "yref": f"{yref} domain", "x0": WINDOW_HOURS,
                           "x1": x_hi, "y0": 0, "y1": 1, "fillcolor": "rgba(0, 0, 0, 0.05)",
                           "line": {"width": 0}, "layer": "below"})
        for h in (0, WINDOW_HOURS):
            shapes.append({"type": "line", "xref": xref, "yref": f"{yref} domain", "x0": h, "x1": h,
                           "y0": 0, "y1": 1, "line": {"color": "#888", "width": 1, "dash": "dot"},
                           "layer": "below"})
        yaxis = {"showgrid": True, "gridcolor": "#eee", "zeroline": False}
        if channel in SCORE_RANGES:
            yaxis["range"] = list(SCORE_RANGES[channel])
            yaxis["dtick"] = 1 if channel != "Glascow coma scale total" else 3
        elif band is not None and len(y):
            lo, hi = np.nanmin(np.append(y, band[0])), np.nanmax(np.append(y, band[1]))
            pad = 0.08 * (hi - lo or 1.0)
            yaxis["range"] = [lo - pad, hi + pad]
        yaxes[f"yaxis{'' if k == 1 else k}"] = yaxis
    for k, trace in enumerate(traces, start=1):
        trace.xaxis, trace.yaxis = _axis_ref(k)
    bottom = {len(channels) - i for i in range(cols)}  # the last subplot of each column
    for k in range(1, len(channels) + 1):
        name = "" if k == 1 else str(k)
        layout[f"xaxis{name}"].update(range=[x_lo, x_hi], showgrid=True, gridcolor="#eee", zeroline=False,
                                      dtick=hour_step(x_hi - x_lo, 6 if cols > 1 else 10), ticksuffix=" h", showticklabels=k in bottom,
                                      title={"text": "hours from admission"} if k in bottom else None)
        layout[f"yaxis{name}"].update(yaxes[f"yaxis{name}"])
    layout.update(shapes=shapes, height=row_height * rows + 80, margin={"l": 10, "r": 10, "t": 40, "b": 40},
                  plot_bgcolor="white", hovermode="closest")
    # built as one dict, not with make_subplots + per-cell updates: 5x faster for 15 channels
    return go.Figure(data=traces, layout=layout)


def effect_strip_html(record: PatientRecord, attribution: VitalAttribution, what: str = "model attribution") -> str:
    """How each vital sign moved the risk, hour by hour over the model's window: one row per channel in the
    small multiples' order, one cell per hour, orange raises / blue lowers with opacity by strength (the
    shading convention of every panel), a tooltip in words; '' when no hour has a weight. Plain, escaped HTML:
    a few hundred cells cost the browser next to nothing, where shading the Plotly subplots made it redraw
    all of them on every disease switch (~0.35 s on the 2-core machine, issue 18)."""
    channels = channels_present(record)
    weights = {c: {h: w for h, w in _hour_weights(attribution.get(c, ())).items()
                   if 0 <= h < WINDOW_HOURS and w and math.isfinite(w)} for c in channels}
    scale = max_abs(w for ws in weights.values() for w in ws.values())
    if scale <= 0:
        return ""
    cells = []
    for channel in channels:
        label = html.escape(display_of(channel).label)
        cells.append(f'<span style="font-size:0.72rem;color:#444;white-space:nowrap;overflow:hidden;'
                     f'line-height:12px">{label}</span>')
        for hour in range(int(WINDOW_HOURS)):
            w = weights[channel].get(hour)
            if w is None:
                cells.append('<i style="background:#f2f2f2"></i>')
            else:
                tip = html.escape(f"{display_of(channel).label}, {hour}-{hour + 1} h: {effect_words(w, scale)} "
                                  f"({what})")
                cells.append(f'<i style="background:{signed_rgba(w, scale, MAX_ALPHA)}" title="{tip}"></i>')
    step = 12
    ticks = "".join(f'<span style="grid-column:span {step};font-size:0.7rem;color:#666">{h} h</span>'
                    for h in range(0, int(WINDOW_HOURS), step))
    return ('<div class="mf-vitals-effect" style="display:grid;grid-template-columns:72px repeat('
            f'{int(WINDOW_HOURS)},1fr);grid-auto-rows:12px;gap:1px;margin-bottom:4px">'
            + "".join(cells) + "<span></span>" + ticks + "</div>")


def _grid_layout(rows: int, cols: int, titles: list[str], *, vertical_spacing: float,
                 horizontal_spacing: float) -> dict:
    """Layout dict of a rows x cols grid of subplots (row-major, x axes all matched to the first),
    with a title annotation above each cell: what make_subplots builds, without its overhead."""
    width = (1 - horizontal_spacing * (cols - 1)) / cols
    height = (1 - vertical_spacing * (rows - 1)) / rows
    layout: dict = {"annotations": []}
    for k, title in enumerate(titles, start=1):
        r, c = (k - 1) // cols, (k - 1) % cols
        x0 = c * (width + horizontal_spacing)
        y1 = 1 - r * (height + vertical_spacing)
        xname, yname = _axis_ref(k)
        xdom = [max(0.0, round(x0, 6)), min(1.0, round(x0 + width, 6))]
        ydom = [max(0.0, round(y1 - height, 6)), min(1.0, round(y1, 6))]
        layout[f"xaxis{'' if k == 1 else k}"] = {"domain": xdom, "anchor": yname,
                                                 **({"matches": "x"} if k > 1 else {})}
        layout[f"yaxis{'' if k == 1 else k}"] = {"domain": ydom, "anchor": xname}
        layout["annotations"].append({"text": title, "x": x0 + width / 2, "y": y1, "xref": "paper",
                                      "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                      "showarrow": False, "font": {"size": 12}})
    return layout
