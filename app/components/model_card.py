"""Model card figures and tables from an evaluation report (train/evaluate.py's JSON). Pure functions.

The report is read defensively: a key the report lacks gives an empty table or no figure, never an
error, because reports written by older or newer versions of `eval` should still display.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from app.components.shading import NEGATIVE_RGB

NA = float("nan")


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return NA


def summary_frame(report: dict[str, Any]) -> pd.DataFrame:
    """Headline metrics with their 95% bootstrap intervals where the report has them."""
    ci = report.get("ci95") or {}
    rows = []
    for key, name in (("macro_auroc", "macro AUROC (diseases)"), ("macro_auprc", "macro AUPRC (diseases)"),
                      ("micro_f1", "micro F1 at the thresholds")):
        if key in report:
            lo, hi = (ci.get(key) or [NA, NA])[:2]
            rows.append({"metric": name, "value": _num(report[key]), "95% interval": _interval(lo, hi)})
    if report.get("mortality"):
        rows.append({"metric": "mortality AUROC", "value": _num(report["mortality"].get("auroc")), "95% interval": ""})
    ece = report.get("ece") or {}
    if "calibrated" in ece:  # per-label calibration (this release)
        rows.append({"metric": "calibration error (ECE), all labels, after per-label calibration",
                     "value": _num(ece["calibrated"]), "95% interval": f"before: {_num(ece.get('uncalibrated')):.3f}"})
    elif "after_scaling" in ece:  # a report of an older release: one temperature
        rows.append({"metric": "calibration error (ECE) after temperature scaling", "value": _num(ece["after_scaling"]),
                     "95% interval": f"before: {_num(ece.get('before_scaling')):.3f}"})
    return pd.DataFrame(rows, columns=["metric", "value", "95% interval"])


def _interval(lo: Any, hi: Any) -> str:
    lo, hi = _num(lo), _num(hi)
    return "" if math.isnan(lo) or math.isnan(hi) else f"{lo:.3f} – {hi:.3f}"


def per_label_frame(report: dict[str, Any]) -> pd.DataFrame:
    """One row per label: AUROC, AUPRC, F1 at its threshold, threshold, prevalence, n."""
    rows = []
    for name, m in (report.get("per_label") or {}).items():
        rows.append({"label": name, **{k: _num(m.get(k)) for k in ("auroc", "auprc", "f1", "threshold", "prevalence")},
                     "n": int(_num(m.get("n")) if not math.isnan(_num(m.get("n"))) else 0)})
    return pd.DataFrame(rows, columns=["label", "auroc", "auprc", "f1", "threshold", "prevalence", "n"])


def subsets_frame(report: dict[str, Any]) -> pd.DataFrame:
    """Macro metrics with all modalities present, and with each one withheld."""
    rows = []
    for name, s in (report.get("subsets") or {}).items():
        rows.append({"subset": name.replace("without:", "without "), "patients": int(_num(s.get("n_patients")) or 0),
                     "macro AUROC": _num(s.get("macro_auroc")), "macro AUPRC": _num(s.get("macro_auprc"))})
    return pd.DataFrame(rows, columns=["subset", "patients", "macro AUROC", "macro AUPRC"])


def reliability_figure(rows: list[dict[str, Any]], height: int = 380) -> go.Figure | None:
    """Reliability diagram: mean predicted vs observed frequency per bin (marker size ~ count), with the
    observed frequency's 95% interval as error bars when the report has them."""
    rows = [r for r in rows or [] if not math.isnan(_num(r.get("predicted"))) and not math.isnan(_num(r.get("observed")))]
    if not rows:
        return None
    counts = [max(int(_num(r.get("count")) or 0), 0) for r in rows]
    biggest = max(counts) or 1
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"color": "#999", "dash": "dot"}, hoverinfo="skip"))
    observed = [_num(r["observed"]) for r in rows]
    lows = [_num(r.get("observed_low")) for r in rows]
    highs = [_num(r.get("observed_high")) for r in rows]
    has_intervals = not any(math.isnan(v) for v in lows + highs)
    fig.add_trace(go.Scatter(
        x=[_num(r["predicted"]) for r in rows], y=observed, mode="lines+markers",
        name="model (calibrated)", line={"color": "rgb({}, {}, {})".format(*NEGATIVE_RGB)},
        marker={"size": [8 + 22 * (c / biggest) ** 0.5 for c in counts]},
        # the observed frequency's 95% interval: a bin of a few predictions says little
        error_y={"type": "data", "symmetric": False, "array": [h - o for h, o in zip(highs, observed)],
                 "arrayminus": [o - lo for o, lo in zip(observed, lows)], "thickness": 1} if has_intervals else None,
        customdata=[[c, lo, hi] for c, lo, hi in zip(counts, lows, highs)],
        hovertemplate=("predicted %{x:.2f}<br>observed %{y:.2f}"
                       + (" (95% interval %{customdata[1]:.2f}-%{customdata[2]:.2f})" if has_intervals else "")
                       + "<br>%{customdata[0]} predictions<extra></extra>")))
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 40}, plot_bgcolor="white",
                      xaxis={"title": {"text": "mean predicted probability"}, "range": [0, 1], "gridcolor": "#eee"},
                      yaxis={"title": {"text": "observed frequency"}, "range": [0, 1], "gridcolor": "#eee"},
                      legend={"orientation": "h", "y": -0.2})
    return fig
