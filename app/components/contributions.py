"""The contribution waterfall: from the model's base value to the patient's logit, one step per
fusion token, and the same steps as a predictions table and a sentence a clinician reads.

Pure functions (no Streamlit). The chart is on the logit (log-odds) scale because that is where the
exact Shapley values add up: base + sum(contributions) == logit. The probability is then
sigmoid(logit / temperature), the checkpoint's calibration, and is said in words, not drawn.
Colours are the evidence panels' convention (shading.py): orange raises the risk, blue lowers it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go


from app.components.shading import NEGATIVE_RGB, POSITIVE_RGB
from app.components.wording import TOKEN_LABELS, TOKEN_MODALITY, long_name

if TYPE_CHECKING:  # the type only: components import no torch
    from medfuse_core.explain.scores import PatientScores

BASE_NAME = "Base value (no data)"
OUTPUT_NAME = "Model output"
TOTAL_RGB = (110, 110, 110)


# The clinician's names of the fusion tokens (the researcher's view keeps TOKEN_LABELS): each modality's
# name in running text from the registry ("Chest X-ray", "Lab results"), and the shared token in words.
SOURCE_NAMES = {**{label: long_name(m)[:1].upper() + long_name(m)[1:] for label, m in TOKEN_MODALITY.items()},
                **{label: "Signals the sources agree on" for label in TOKEN_LABELS.values()
                   if label not in TOKEN_MODALITY}}
NO_DATA_NAME = "Risk with no patient data"
PATIENT_NAME = "This patient's risk"


def strength_word(points: float) -> str:
    """Plain strength of a move of the risk, in percentage points (|20| or more: strongly)."""
    size = abs(points)
    return "strongly" if size >= 20 else "moderately" if size >= 5 else "slightly" if size >= 0.5 else "barely"


def source_points(points: Mapping[str, float]) -> dict[str, float]:
    """{token name: points} (medfuse_core/explain/probability_scale.py `risk_points`) under the clinician's
    source names ("Chest X-ray", "Signals the sources agree on")."""
    return {SOURCE_NAMES.get(name, name): float(v) for name, v in points.items()}


def risk_sentence(points: Mapping[str, float], present: Mapping[str, bool] | None = None) -> str:
    """'Chest X-ray raised this patient's risk strongly (+41 points); labs lowered it slightly (-2 points).'"""
    moved = {k: v for k, v in points.items() if abs(v) >= 0.05}
    if not moved:
        return "None of this patient's data moved the risk away from the no-data risk."
    parts = []
    for name, value in sorted(moved.items(), key=lambda kv: -abs(kv[1])):
        verb = "raised" if value > 0 else "lowered"
        parts.append(f"{name} {verb} it {strength_word(value)} ({value:+.0f} points)")
    text = "; ".join(parts[:3]) + "."
    absent = [SOURCE_NAMES[name] for name, m in TOKEN_MODALITY.items() if present is not None and not present.get(m, True)]
    if absent:
        text += " Not available, so no effect: " + ", ".join(absent) + "."
    return text[0].upper() + text[1:]


def risk_bars_html(start: float, points: Mapping[str, float], end: float) -> str:
    """The clinician's chart: from the no-data risk to this patient's risk, one bar per source, in
    percentage points (orange raises, blue lowers, grey for the two risks); the exact log-odds chart is the
    researchers'. Plain, escaped HTML, not a Plotly waterfall: it is redrawn on every disease switch, and the
    waterfall cost the browser ~40 ms and the server ~7 ms each time on the 2-core machine (issue 18)."""
    rows = [(NO_DATA_NAME, 0.0, start, TOTAL_RGB, f"{start:.0f}%")]
    level = start
    for name, value in points.items():
        rows.append((name, level, level + value, POSITIVE_RGB if value >= 0 else NEGATIVE_RGB, f"{value:+.0f} pts"))
        level += value
    rows.append((PATIENT_NAME, 0.0, end, TOTAL_RGB, f"{end:.0f}%"))
    span = 112.0  # room right of 100 % for the last label, as the chart's axis had

    def pct(x: float) -> float:
        return round(min(max(x, 0.0), span) / span * 100, 2)

    cells = []
    for name, a, b, rgb, label in rows:
        left, right = pct(min(a, b)), pct(max(a, b))
        bar = (f'<span style="position:absolute;left:{left}%;width:{max(right - left, 0.4)}%;top:3px;bottom:3px;'
               f'background:{_rgb(rgb)}"></span>'
               f'<span style="position:absolute;left:calc({right}% + 4px);top:0;font-size:0.72rem;color:#555;'
               f'line-height:22px;white-space:nowrap">{html.escape(label)}</span>')
        cells.append(f'<span style="text-align:right;font-size:0.75rem;color:#444;line-height:22px;'
                     f'white-space:nowrap;overflow:hidden;text-overflow:ellipsis" title="{html.escape(name)}">{html.escape(name)}</span>'
                     f'<span style="position:relative;height:22px;border-left:1px solid #ccc">{bar}</span>')
    ticks = "".join(f'<span style="position:absolute;left:{pct(t)}%;transform:translateX(-50%)">{t}%</span>'
                    for t in (0, 50, 100))
    axis = ('<span></span><span style="position:relative;height:16px;border-top:1px solid #ccc;font-size:0.7rem;'
            f'color:#666">{ticks}</span><span></span><span style="font-size:0.75rem;color:#555;text-align:center;'
            'padding-top:2px">risk, % (left: lower, right: higher)</span>')
    return ('<div class="mf-risk-bars" role="img" aria-label="How each source moved the risk" '
            'style="display:grid;grid-template-columns:minmax(150px,44%) 1fr;column-gap:8px;'
            f'padding-right:40px;margin:6px 0 8px 0">{"".join(cells)}{axis}</div>')


def trajectory_figure(hours: list[float], probabilities: list[float], disease: str, height: int = 220) -> go.Figure:
    """One disease's risk over the stay: the model re-run at each cut-off (medfuse_core/trajectory.py)."""
    fig = go.Figure(go.Scatter(x=hours, y=[100 * p for p in probabilities], mode="lines+markers",
                               line={"color": _rgb(POSITIVE_RGB), "shape": "hv"}, marker={"size": 6},
                               hovertemplate="by %{x:.0f} h: %{y:.0f}%<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 35}, plot_bgcolor="white",
                      title={"text": html.escape(f"{disease}: risk with the data available by each hour"),
                             "font": {"size": 13}},
                      xaxis={"title": {"text": "hours from admission"}, "ticksuffix": " h", "gridcolor": "#eee"},
                      yaxis={"range": [0, 100], "ticksuffix": "%", "gridcolor": "#eee"})
    return fig


def _rgb(rgb: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*rgb)


@dataclass(frozen=True)
class Step:
    """One bar of the waterfall: a named move from `start` to `end` on the logit scale."""

    name: str
    start: float
    end: float
    kind: str  # "base" | "contribution" | "output"

    @property
    def value(self) -> float:
        return self.end - self.start


def waterfall_steps(base: float, contributions: Mapping[str, float], logit: float) -> list[Step]:
    """Base bar, one step per token (in the given order), output bar.

    Raises ValueError when the contributions do not add up to the logit (|gap| > 1e-4): a chart that
    does not add up would mislead, so it is never drawn.
    """
    steps = [Step(BASE_NAME, 0.0, float(base), "base")]
    level = float(base)
    for name, value in contributions.items():
        steps.append(Step(name, level, level + float(value), "contribution"))
        level += float(value)
    gap = level - float(logit)
    if not math.isfinite(gap) or abs(gap) > 1e-4:
        raise ValueError(f"contributions do not add up: base + sum = {level:.6f}, logit = {float(logit):.6f}")
    steps.append(Step(OUTPUT_NAME, 0.0, float(logit), "output"))
    return steps


def probability_sentence(disease: str, probability: float, threshold: float,
                         low: float | None = None, high: float | None = None) -> str:
    """'Pneumonia: estimated probability 43%, above the decision threshold of 35%; ...' in plain words."""
    side = "above" if probability >= threshold else "below"
    text = f"{disease}: estimated probability {probability:.0%}, {side} the decision threshold of {threshold:.0%}"
    if low is not None and high is not None:
        text += f"; {low:.0%} to {high:.0%} if only some of this patient's sources were available"
    return text + "."


def contribution_sentence(contributions: Mapping[str, float], present: Mapping[str, bool] | None = None) -> str:
    """Which token pushed the prediction most, up and down, in words."""
    shown = {k: v for k, v in contributions.items() if abs(v) > 1e-9}
    if not shown:
        return "No modality moved the prediction away from the base value."
    up = max(shown.items(), key=lambda kv: kv[1])
    down = min(shown.items(), key=lambda kv: kv[1])
    parts = []
    if up[1] > 0:
        parts.append(f"{up[0]} raised it most ({up[1]:+.2f} log-odds)")
    if down[1] < 0:
        parts.append(f"{down[0]} lowered it most ({down[1]:+.2f} log-odds)")
    absent = [name for name, m in TOKEN_MODALITY.items() if present is not None and not present.get(m, True)]
    text = "; ".join(parts) + "."
    if absent:
        text += " Absent, so contributing nothing: " + ", ".join(absent) + "."
    return text[0].upper() + text[1:]


def waterfall_figure(base: float, contributions: Mapping[str, float], logit: float, *,
                     title: str | None = None, height: int = 330) -> go.Figure:
    """Horizontal waterfall (plotly) from the base value to the logit; orange up, blue down."""
    steps = waterfall_steps(base, contributions, logit)
    names = [s.name for s in steps]
    measure = ["absolute"] + ["relative"] * (len(steps) - 2) + ["total"]
    values = [steps[0].end] + [s.value for s in steps[1:-1]] + [steps[-1].end]
    text = [f"{steps[0].end:+.2f}"] + [f"{s.value:+.2f}" for s in steps[1:-1]] + [f"{steps[-1].end:+.2f}"]
    fig = go.Figure(go.Waterfall(
        orientation="h", measure=measure, y=names, x=values, base=0, text=text, textposition="outside",
        increasing={"marker": {"color": _rgb(POSITIVE_RGB)}},
        decreasing={"marker": {"color": _rgb(NEGATIVE_RGB)}},
        totals={"marker": {"color": _rgb(TOTAL_RGB)}},
        connector={"line": {"color": "#999", "dash": "dot", "width": 1}},
        hovertemplate="%{y}: %{x:+.3f}<extra></extra>",
    ))
    lo = min(0.0, *(min(s.start, s.end) for s in steps))
    hi = max(0.0, *(max(s.start, s.end) for s in steps))
    pad = 0.25 * max(hi - lo, 0.5)
    fig.update_layout(
        title={"text": html.escape(title)} if title else None, height=height, showlegend=False,
        margin={"l": 10, "r": 20, "t": 40 if title else 10, "b": 40},
        xaxis={"title": {"text": "log-odds (left: lower risk, right: higher risk)"}, "range": [lo - pad, hi + pad],
               "zeroline": True, "zerolinecolor": "#bbb"},
        yaxis={"autorange": "reversed", "automargin": True},
        plot_bgcolor="white",
    )
    return fig


def scores_contributions(scores: PatientScores, label: str) -> tuple[float, dict[str, float], float]:
    """(base, {token name: value}, logit) of one label, ready for waterfall_figure."""
    k = scores.index(label)
    return float(scores.base[k]), scores.contributions_for(label), float(scores.logits[k])


def present_by_modality(scores: PatientScores) -> dict[str, bool]:
    from medfuse_core.record import MODALITIES

    return {m: bool(p) for m, p in zip(MODALITIES, scores.present)}


def status_lines(scores: PatientScores) -> list[str]:
    """The patient-level status of a prediction in plain words (issue 17): out of domain (what was left out
    and why), uncertain (which diseases' intervals cross their threshold), or no flags; and what this
    checkpoint cannot check (no domain file, no intervals), said rather than implied."""
    from app.components.worklist import short_label
    from app.components.wording import NO_DOMAIN_CHECK_MESSAGE, NO_INTERVALS_MESSAGE

    status = getattr(scores, "status", "ok")
    states = tuple(getattr(scores, "states", ()) or ())
    domain = getattr(scores, "domain", None) or {}
    checked_domain = bool(domain.get("available"))
    has_intervals = getattr(scores, "interval_low", None) is not None
    lines = []
    if status == "out of domain":
        lines.append(f"Status: out of domain. {getattr(scores, 'reason', '')} The predictions stand on the other sources.")
    uncertain = [short_label(label) for label, state in zip(scores.labels, states) if state == "uncertain"]
    if uncertain:
        lines.append(f"Status: uncertain for {len(uncertain)} of {len(scores.labels)} diseases ({', '.join(uncertain)}): "
                     "the interval crosses the decision threshold, so the call could go either way.")
    if not lines:
        parts = ["Status: no flags."]
        if checked_domain:
            parts.append("Every source the model used looked like its training data.")
        if has_intervals:
            parts.append("Every interval lies on one side of its decision threshold.")
        lines.append(" ".join(parts))
    if not checked_domain:
        lines.append(NO_DOMAIN_CHECK_MESSAGE)
    if not has_intervals:
        lines.append(NO_INTERVALS_MESSAGE)
    return lines


def predictions_frame(scores: PatientScores) -> pd.DataFrame:
    """One row per label: calibrated probability, its uncertainty interval (when the checkpoint has one),
    threshold, above/below ("uncertain" when the interval straddles the threshold), modality-subset range."""
    rows = []
    low, high = getattr(scores, "interval_low", None), getattr(scores, "interval_high", None)
    states = tuple(getattr(scores, "states", ()) or ())
    for k, label in enumerate(scores.labels):
        p, t = float(scores.probabilities[k]), float(scores.thresholds[k])
        rows.append({
            "disease": label,
            "probability": p,
            "interval": f"{low[k]:.0%}–{high[k]:.0%}" if low is not None and high is not None else "",
            "threshold": t,
            "call": "uncertain" if states and states[k] == "uncertain" else ("above" if p >= t else "below"),
            "range": f"{scores.subset_low[k]:.0%}–{scores.subset_high[k]:.0%}",
            "spread": float(scores.subset_high[k] - scores.subset_low[k]),
        })
    frame = pd.DataFrame(rows, columns=["disease", "probability", "interval", "threshold", "call", "range", "spread"])
    return frame.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


def predictions_display(scores: PatientScores, disease: str | None = None) -> pd.DataFrame:
    """The predictions table as a clinician reads it: short disease names (▶ marks `disease`), percent
    probability and threshold, above/below, and the range over fewer sources, highest first."""
    from app.components.worklist import short_label

    frame = predictions_frame(scores).drop(columns=["spread"])
    frame["disease"] = [("▶ " if d == disease else "") + short_label(d) for d in frame["disease"]]
    frame[["probability", "threshold"]] *= 100  # percent columns read "43%", not "0.43"
    return frame


def contributions_frame(scores: PatientScores) -> pd.DataFrame:
    """Every label's token contributions (log-odds), with base and logit: the report's full table."""
    rows = []
    for k, label in enumerate(scores.labels):
        row = {"disease": label, "base": float(scores.base[k])}
        row.update(scores.contributions_for(label))
        row["logit"] = float(scores.logits[k])
        rows.append(row)
    return pd.DataFrame(rows, columns=["disease", "base", *TOKEN_LABELS.values(), "logit"])


def contributions_svg(steps: list[Step], width: int = 640, row_height: int = 26) -> str:
    """The waterfall as a small static SVG (for the HTML report: no JavaScript, prints as drawn)."""
    label_w, pad = 200, 12
    lo = min(0.0, *(min(s.start, s.end) for s in steps))
    hi = max(0.0, *(max(s.start, s.end) for s in steps))
    span = max(hi - lo, 1e-6)
    plot_w = width - label_w - 2 * pad - 60

    def x(v: float) -> float:
        return label_w + pad + (v - lo) / span * plot_w

    height = row_height * len(steps) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="contribution waterfall" style="font:12px sans-serif">',
             f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{height - 24}" stroke="#bbb"/>']
    for i, s in enumerate(steps):
        y = i * row_height + 4
        rgb = TOTAL_RGB if s.kind != "contribution" else (POSITIVE_RGB if s.value >= 0 else NEGATIVE_RGB)
        x0, x1 = sorted((x(s.start), x(s.end)))
        value = s.end if s.kind != "contribution" else s.value
        parts.append(f'<text x="{label_w}" y="{y + 15}" text-anchor="end">{html.escape(s.name)}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{row_height - 8}" '
                     f'fill="{_rgb(rgb)}"/>')
        parts.append(f'<text x="{x1 + 4:.1f}" y="{y + 15}">{value:+.2f}</text>')
    parts.append(f'<text x="{label_w + pad}" y="{height - 6}" fill="#555">log-odds: left lowers the risk, '
                 'right raises it</text></svg>')
    return "".join(parts)


def spread_is_wide(scores: PatientScores, label: str, width: float = 0.2) -> bool:
    k = scores.index(label)
    return bool(np.isfinite(scores.subset_high[k]) and scores.subset_high[k] - scores.subset_low[k] >= width)
