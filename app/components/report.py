"""Per-patient report export: a self-contained HTML page and a PDF, built from the same content.

Safety rule as in notes.py: every string that came from a record, a checkpoint or a label goes
through `html.escape` before our markup is added, so a note holding `<script>` prints as text. The
HTML has no JavaScript and no external resources (the chart is inline SVG), so it opens offline and
prints as shown. The PDF uses matplotlib (already installed with captum), a pure-Python route; its
text is drawn with math parsing off, so `$` in a note stays a dollar sign.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from app.components.contributions import (contribution_sentence, contributions_frame, contributions_svg,
                                          predictions_frame, present_by_modality, probability_sentence,
                                          risk_sentence, scores_contributions, source_points, status_lines,
                                          waterfall_steps)
from app.components.shading import NEGATIVE_RGB, POSITIVE_RGB
from app.components.wording import UNCERTAINTY_HELP

if TYPE_CHECKING:  # the type only: components import no torch
    from medfuse_core.explain.scores import PatientScores

CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222;max-width:960px;margin:24px auto;padding:0 16px}
h1{font-size:1.5rem;margin-bottom:4px} h2{font-size:1.15rem;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f4f6f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#fff4e5;border:1px solid #f0b45a;padding:8px 12px;border-radius:4px}
.muted{color:#666;font-size:0.9rem} .above{color:#8a1c1c;font-weight:600}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:8px;font-size:0.85rem}
"""


@dataclass
class ReportContent:
    """Everything a report shows; the page builds it once and both formats render it."""

    patient_id: str
    demographics: str
    modalities: str
    scores: PatientScores | None
    disease: str | None
    checkpoint: str = ""
    synthetic_model: bool = False
    synthetic_data: bool = False
    evidence: dict[str, list[str]] = field(default_factory=dict)  # section -> lines (plain text)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (heading, text), plain text
    generated: str = field(default_factory=lambda: datetime.now().strftime("%Y-%m-%d %H:%M"))
    # what a printed page shows beside the predictions (all optional; plain data, no Streamlit)
    image: np.ndarray | None = None  # the film, [0, 1] display grey levels
    overlay: np.ndarray | None = None  # the evidence map on the film's grid (signed or >= 0), or None
    image_caption: str = ""  # "image 1 · PA · 2131-05-07 10:12 (+26.2 h)"
    vitals: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # "HR (bpm)" -> (hours, values)
    labs: list[dict[str, str]] = field(default_factory=list)  # abnormal results: item, value, unit, flag, time
    coverage: list[str] = field(default_factory=list)  # what the model did not read, and why
    # (risk with no data, {source: percentage points}, this patient's risk) for `disease`, from
    # medfuse_core/explain/probability_scale.py `risk_points` (the page computes it; components do no maths)
    risk: tuple[float, dict[str, float], float] | None = None
    # a model was loaded but gave no prediction: why, in plain words (the report states "insufficient data")
    no_prediction_reason: str = ""


def no_prediction_reason(record: Any, scores: PatientScores | None, model_loaded: bool) -> str:
    """Why a loaded model gave no prediction ('' when it gave one or none was loaded): no usable data, or
    every source out of domain (the only other way a patient with data gets no prediction)."""
    from app.components.wording import ALL_OUT_OF_DOMAIN_MESSAGE, NO_DATA_MESSAGE

    if scores is not None or not model_loaded:
        return ""
    return ALL_OUT_OF_DOMAIN_MESSAGE if getattr(record, "present_modalities", None) else NO_DATA_MESSAGE


def report_status(content: ReportContent) -> list[str]:
    """The patient-level status the report states beside its predictions (issue 17): insufficient data
    (no prediction), out of domain, uncertain or no flags, and what the checkpoint could not check."""
    if content.scores is None:
        reason = content.no_prediction_reason.removeprefix("Insufficient data: ")
        return [f"Status: insufficient data. {reason[:1].upper() + reason[1:]}"] if reason else []
    return status_lines(content.scores)


def _png(fig) -> str:
    """A matplotlib figure as a data: URI (the HTML stays one self-contained file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _draw_film(ax, image: np.ndarray, overlay: np.ndarray | None, caption: str) -> None:
    ax.imshow(np.asarray(image, dtype=np.float32), cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    if overlay is not None and np.shape(overlay) == np.shape(image):
        ov = np.asarray(overlay, dtype=np.float32)
        top = float(np.max(np.abs(ov))) or 1.0
        from matplotlib.colors import LinearSegmentedColormap

        shown = np.ma.masked_where(np.abs(ov) < 0.15 * top, ov / top)
        orange = tuple(v / 255 for v in POSITIVE_RGB)
        blue = tuple(v / 255 for v in NEGATIVE_RGB)
        if float(np.min(ov)) < 0:  # signed: blue lowers, orange raises (the dashboard's convention)
            cmap, vmin = LinearSegmentedColormap.from_list("signed", [blue, (1, 1, 1), orange]), -1
        else:
            cmap, vmin = LinearSegmentedColormap.from_list("evidence", [(1, 0.85, 0.6), orange]), 0
        ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=1, alpha=0.6, interpolation="bilinear")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(caption[:70] + (" · overlay: evidence" if overlay is not None else ""), fontsize=7, loc="left")


def _draw_vitals(fig, box: tuple[float, float, float, float], vitals: dict[str, tuple[Any, Any]]) -> None:
    """Up to six vital-sign channels as small line plots in `box` (figure fractions), hours on x."""
    x0, y0, w, h = box
    shown = list(vitals.items())[:6]
    if not shown:
        return
    rows = (len(shown) + 1) // 2
    for i, (name, (hours, values)) in enumerate(shown):
        r, col = divmod(i, 2)
        ax = fig.add_axes((x0 + col * w / 2 + 0.03, y0 + h - (r + 1) * h / rows + 0.02, w / 2 - 0.05, h / rows - 0.04))
        ax.plot(np.asarray(hours, dtype=float), np.asarray(values, dtype=float), lw=0.8, color="#1f4e79")
        ax.set_title(name, fontsize=6.5, loc="left", pad=2)
        ax.tick_params(labelsize=5.5, length=2)
        ax.axvspan(0, 48, color="#2ea043", alpha=0.06, lw=0)
        if r == rows - 1:
            ax.set_xlabel("hours from admission", fontsize=5.5, labelpad=1)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(frame: pd.DataFrame, percent: tuple[str, ...] = (), signed: tuple[str, ...] = ()) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            v = row[c]
            if c in percent:
                cells.append(f'<td class="num">{v:.1%}</td>')
            elif c in signed:
                cells.append(f'<td class="num">{v:+.3f}</td>')
            elif c == "call" and v == "above":
                cells.append('<td class="above">above</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def report_html(content: ReportContent) -> str:
    """The report as one HTML document (UTF-8 string)."""
    c = content
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>MEDFuse Lens report: "
             f"{_e(c.patient_id)}</title><style>{CSS}</style></head><body>",
             f"<h1>Patient {_e(c.patient_id)}</h1>",
             f"<p>{_e(c.demographics)}<br><span class='muted'>Modalities: {_e(c.modalities)} · report generated "
             f"{_e(c.generated)}{' · checkpoint ' + _e(c.checkpoint) if c.checkpoint else ''}</span></p>"]
    if c.synthetic_data or c.synthetic_model:
        what = " and ".join(x for x, on in (("synthetic patient data", c.synthetic_data),
                                             ("a model trained on synthetic data", c.synthetic_model)) if on)
        parts.append(f"<p class='banner'>Demonstration only: this report uses {_e(what)}. Not for clinical use.</p>")
    s = c.scores
    status = "".join(f"<p class='status'><strong>{_e(line)}</strong></p>" for line in report_status(c))
    if s is None:
        parts.append("<h2>Predictions</h2>" + (status or "<p>No model was loaded: no predictions.</p>"))
    else:
        frame = predictions_frame(s).drop(columns=["spread"]).rename(
            columns={"range": "range with fewer sources (modality-subset range)"})
        parts.append("<h2>Predictions</h2>" + status + _table(frame, percent=("probability", "threshold"))
                     + f"<p class='muted'>Estimated probabilities (calibrated on validation patients). Interval: "
                       f"where the outcome could lie for patients like this one; 'uncertain' when it crosses the "
                       f"threshold. Range with "
                       f"fewer sources: {_e(UNCERTAINTY_HELP)}</p>")
        if c.disease:
            k = s.index(c.disease)
            points = source_points(c.risk[1]) if c.risk else {}
            parts.append(f"<h2>Why: {_e(c.disease)}</h2>")
            parts.append(f"<p>{_e(probability_sentence(c.disease, float(s.probabilities[k]), float(s.thresholds[k]), float(s.subset_low[k]), float(s.subset_high[k])))}</p>")
            if points:
                parts.append(f"<p>{_e(risk_sentence(points, present_by_modality(s)))}</p>")
    parts += _html_panels(c)
    if s is not None:
        parts.append("<h2>For researchers: exact contributions (log-odds)</h2>")
        if c.disease:
            base, contributions, logit = scores_contributions(s, c.disease)
            parts.append(contributions_svg(waterfall_steps(base, contributions, logit)))
            parts.append(f"<p class='muted'>{_e(contribution_sentence(contributions, present_by_modality(s)))} "
                         "The bars add up from the base value (no data) to the model output on the log-odds "
                         f"scale (exact Shapley values of the fusion tokens); probability: the log-odds "
                         f"{_e(s.calibration)}.</p>")
        parts.append(_table(contributions_frame(s), signed=tuple(contributions_frame(s).columns[1:])))
    if c.evidence:
        parts.append("<h2>Evidence summary</h2>")
        for section, lines in c.evidence.items():
            items = "".join(f"<li>{_e(line)}</li>" for line in lines) or "<li>none</li>"
            parts.append(f"<h3>{_e(section)}</h3><ul>{items}</ul>")
    if c.notes:
        parts.append("<h2>Notes</h2>")
        for heading, text in c.notes:
            parts.append(f"<h3>{_e(heading)}</h3><pre>{_e(text)}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def _html_panels(c: ReportContent) -> list[str]:
    """Coverage, abnormal labs with their times, the film with its overlay and the vitals chart."""
    from matplotlib.figure import Figure

    parts: list[str] = []
    parts.append("<h2>What the model did not read</h2><ul>"
                 + ("".join(f"<li>{_e(line)}</li>" for line in c.coverage) or "<li>Everything was read.</li>")
                 + "</ul>")
    if c.labs:
        frame = pd.DataFrame(c.labs, columns=["item", "value", "unit", "flag", "reference", "time"])
        parts.append("<h2>Abnormal lab results (latest value, with its time)</h2>" + _table(frame))
    if c.image is not None:
        fig = Figure(figsize=(4.2, 4.2))
        _draw_film(fig.add_subplot(1, 1, 1), c.image, c.overlay, c.image_caption)
        parts.append(f"<h2>Chest X-ray</h2><img alt='chest X-ray' style='max-width:420px' src='{_png(fig)}'>")
    if c.vitals:
        fig = Figure(figsize=(8.0, 1.3 * ((min(len(c.vitals), 6) + 1) // 2) + 0.4))
        _draw_vitals(fig, (0.0, 0.0, 1.0, 1.0), c.vitals)
        parts.append(f"<h2>Vital signs</h2><img alt='vital signs' style='max-width:100%' src='{_png(fig)}'>")
    return parts


def report_pdf(content: ReportContent) -> bytes:
    """The report as a PDF (matplotlib's PDF backend). Page 1 is the patient on one A4 page: predictions
    as a table with the range with fewer sources, why (in percentage points), the film with its overlay,
    the abnormal labs with their times, the vitals chart and what the model did not read. Later pages:
    the evidence lines, the exact log-odds chart for researchers and the notes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    from app.components.worklist import short_label

    c = content
    s = c.scores
    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        fig = _new_page(Figure)
        fig.text(0.05, 0.965, f"Patient {c.patient_id}", fontsize=15, weight="bold", va="top", parse_math=False)
        fig.text(0.05, 0.938, _wrap(c.demographics, 120), fontsize=8.5, va="top", parse_math=False)
        fig.text(0.05, 0.922, _wrap(f"Data: {c.modalities} · report generated {c.generated}"
                                    + (f" · checkpoint {c.checkpoint}" if c.checkpoint else ""), 130),
                 fontsize=7, color="#555", va="top", parse_math=False)
        top = 0.905
        if c.synthetic_data or c.synthetic_model:
            fig.text(0.05, top, "Demonstration only (synthetic data or model). Not for clinical use.", fontsize=8,
                     color="#a15c00", weight="bold", va="top", parse_math=False)
            top -= 0.018
        status = report_status(c)
        if status:
            wrapped = "\n".join(_wrap(line, 140) for line in status)
            fig.text(0.05, top, wrapped, fontsize=7.5, weight="bold", va="top", parse_math=False, color="#8a1c1c"
                     if any(line.startswith(("Status: out", "Status: uncertain", "Status: insufficient", "No "))
                            for line in status) else "#222")
            top -= 0.013 * (1 + wrapped.count("\n")) + 0.006
        if s is None:
            if not status:
                fig.text(0.05, top - 0.01, "No model was loaded: no predictions.", fontsize=9, va="top", parse_math=False)
            table_bottom = top - 0.04
        else:
            frame = predictions_frame(s)
            rows = [[short_label(r.disease)[:44], f"{r.probability:.0%}", r.interval or "-", f"{r.threshold:.0%}", r.call,
                     r.range] for r in frame.itertuples(index=False)]
            height = 0.0165 * (len(rows) + 1)
            ax = fig.add_axes((0.05, top - 0.012 - height, 0.58, height))
            ax.axis("off")
            table = ax.table(cellText=rows, colLabels=["disease", "probability", "interval", "threshold", "vs thr.",
                                                       "fewer sources"],
                             colWidths=[0.36, 0.11, 0.13, 0.11, 0.12, 0.17], loc="upper left", cellLoc="left")
            table.auto_set_font_size(False)
            table.set_fontsize(7)
            for (r, col), cell in table.get_celld().items():
                cell.set_linewidth(0.3)
                cell.get_text().set_parse_math(False)  # a "$" in a label stays a dollar sign
                if r == 0:
                    cell.set_facecolor("#f4f6f8")
                elif rows[r - 1][4] in ("above", "uncertain") and col == 4:
                    cell.get_text().set_color("#8a1c1c")
            table_bottom = top - 0.02 - height
            why_bottom = table_bottom
            if c.disease:
                k = s.index(c.disease)
                points = source_points(c.risk[1]) if c.risk else {}
                why = (probability_sentence(c.disease, float(s.probabilities[k]), float(s.thresholds[k]),
                                            float(s.subset_low[k]), float(s.subset_high[k]))
                       + (" " + risk_sentence(points, present_by_modality(s)) if points else ""))
                fig.text(0.66, top - 0.012, "Why: " + short_label(c.disease), fontsize=9, weight="bold", va="top",
                         parse_math=False)
                wrapped = _wrap(why, 48)
                fig.text(0.66, top - 0.032, wrapped, fontsize=7, va="top", parse_math=False)
                why_bottom = top - 0.036 - 0.0115 * (1 + wrapped.count("\n"))
        # the film and the abnormal labs side by side
        mid_top = min(table_bottom, why_bottom if s is not None else table_bottom) - 0.01
        if c.image is not None:
            ax = fig.add_axes((0.05, mid_top - 0.30, 0.40, 0.30))
            _draw_film(ax, c.image, c.overlay, c.image_caption)
        else:
            fig.text(0.05, mid_top - 0.01, "No chest X-ray.", fontsize=8, va="top", parse_math=False)
        fig.text(0.49, mid_top - 0.005, "Abnormal lab results (latest, with time)", fontsize=8.5, weight="bold",
                 va="top", parse_math=False)
        lab_lines = [f"{r['item']}: {r['value']} {r['unit']} ({r['flag']}) at {r['time']}".replace("  ", " ")
                     for r in c.labs[:14]] or ["none"]
        if len(c.labs) > 14:
            lab_lines.append(f"... and {len(c.labs) - 14} more (HTML report)")
        fig.text(0.49, mid_top - 0.025, "\n".join(_wrap(line, 62) for line in lab_lines), fontsize=6.8, va="top",
                 parse_math=False, linespacing=1.35)
        # vitals and coverage at the bottom
        vit_top = mid_top - 0.32
        if c.vitals:
            fig.text(0.05, vit_top, "Vital signs (green: the model's first 48 h)", fontsize=8.5, weight="bold",
                     va="top", parse_math=False)
            _draw_vitals(fig, (0.03, 0.13, 0.94, vit_top - 0.15), c.vitals)
        fig.text(0.05, 0.115, "What the model did not read", fontsize=8.5, weight="bold", va="top", parse_math=False)
        fig.text(0.05, 0.097, "\n".join(_wrap(line, 140) for line in (c.coverage or ["Everything was read."])[:6]),
                 fontsize=6.8, va="top", parse_math=False, linespacing=1.3)
        pdf.savefig(fig)

        # appendix: evidence lines, the exact log-odds chart, the notes
        lines: list[tuple[str, str]] = []
        for section, items in c.evidence.items():
            lines.append(("h2", section))
            lines.extend(("p", f"- {item}") for item in items[:20])
        for heading, text in c.notes:
            lines.append(("h2", f"Note: {heading}"))
            lines.extend(("p", part) for part in str(text).splitlines() if part.strip())
        if lines:
            fig, y = _new_page(Figure), 0.95
            for kind, text in lines:
                wrapped = _wrap(text, 110)
                step = (0.035 if kind == "h2" else 0.02) * (1 + wrapped.count("\n"))
                if y - step < 0.05:
                    pdf.savefig(fig)
                    fig, y = _new_page(Figure), 0.95
                fig.text(0.07, y, wrapped, fontsize=11 if kind == "h2" else 8.5, va="top", parse_math=False,
                         weight="bold" if kind == "h2" else "normal", color="#222")
                y -= step
            pdf.savefig(fig)
        if s is not None and c.disease:
            pdf.savefig(_waterfall_page(Figure, *scores_contributions(s, c.disease), c.disease))
    return buffer.getvalue()


def _new_page(figure_cls):
    return figure_cls(figsize=(8.27, 11.69))  # A4 portrait


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or " "


def _waterfall_page(figure_cls, base: float, contributions: dict[str, float], logit: float, disease: str):
    steps = waterfall_steps(base, contributions, logit)
    fig = figure_cls(figsize=(8.27, 5.0))
    ax = fig.add_axes((0.32, 0.15, 0.62, 0.72))
    names = [s.name for s in steps][::-1]
    for i, s in enumerate(reversed(steps)):
        lo, hi = sorted((s.start, s.end))
        if s.kind == "contribution":
            rgb = POSITIVE_RGB if s.value >= 0 else NEGATIVE_RGB
        else:
            rgb = (110, 110, 110)
        ax.barh(i, hi - lo if hi > lo else 1e-3, left=lo, color=[v / 255 for v in rgb])
        ax.text(hi, i, f" {s.value if s.kind == 'contribution' else s.end:+.2f}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.axvline(0, color="#bbb", lw=0.8)
    ax.set_xlabel("log-odds (left: lower risk, right: higher risk)", fontsize=8)
    ax.set_title(f"For researchers: exact contributions (log-odds) · {disease[:60]}", fontsize=10, loc="left")
    return fig


def coverage_lines(record: Any, window_hours: int, modality_names: dict[str, str]) -> list[str]:
    """What the model did not read for this patient, with the reason: absent modalities, results and
    notes outside its first `window_hours` hours, films it does not use, and files that failed to load."""
    lines = [f"{name}: not in the record." for m, name in modality_names.items() if not record.has(m)]

    def outside(times) -> int:
        hours = np.asarray(record.hours_since_index(times), dtype=float) if len(times) else np.array([])
        return int(np.sum((hours < 0) | (hours > window_hours))) if hours.size else 0

    if record.has("labs"):
        n = outside(record.labs.table["time"])
        if n:
            lines.append(f"Labs: {n} of {len(record.labs.table)} results outside the first {window_hours} h (not read).")
    if record.has("vitals"):
        n = outside(record.vitals.table["time"])
        if n:
            lines.append(f"Vital signs: {n} of {len(record.vitals.table)} observations outside the first "
                         f"{window_hours} h (not read).")
    timed = [n.time for n in record.notes if n.time is not None and pd.notna(n.time)]
    n_notes = outside(pd.Series(timed)) if timed else 0
    if n_notes:
        lines.append(f"Notes: {n_notes} of {len(record.notes)} notes outside the first {window_hours} h (not read).")
    if len(record.images) > 1:
        lines.append(f"Chest X-ray: {len(record.images)} films; the model reads one (the latest frontal film).")
    if record.problems:
        lines.append(f"{len(record.problems)} loading problem(s): the data they name was not read "
                     "(see the review page's loading warnings).")
    return lines
