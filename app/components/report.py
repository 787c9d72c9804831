"""Per-patient report export: a self-contained HTML page and a PDF, built from the same content.

Safety rule as in notes.py: every string that came from a record, a checkpoint or a label goes
through `html.escape` before our markup is added, so a note holding `<script>` prints as text. The
HTML has no JavaScript and no external resources (the chart is inline SVG), so it opens offline and
prints as shown. The PDF uses matplotlib (already installed with captum), a pure-Python route; its
text is drawn with math parsing off, so `$` in a note stays a dollar sign.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from app.components.contributions import (contribution_sentence, contributions_frame, contributions_svg,
                                          predictions_frame, present_by_modality, probability_sentence,
                                          scores_contributions, waterfall_steps)
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
    if s is None:
        parts.append("<h2>Predictions</h2><p>No model was loaded: no predictions.</p>")
    else:
        frame = predictions_frame(s).drop(columns=["spread"]).rename(columns={"range": "modality-subset range"})
        parts.append("<h2>Predictions</h2>" + _table(frame, percent=("probability", "threshold"))
                     + f"<p class='muted'>Probabilities are calibrated (temperature {s.temperature:.3g}). "
                       f"Modality-subset range: {_e(UNCERTAINTY_HELP)}</p>")
        if c.disease:
            base, contributions, logit = scores_contributions(s, c.disease)
            k = s.index(c.disease)
            parts.append(f"<h2>Why: {_e(c.disease)}</h2>")
            parts.append(f"<p>{_e(probability_sentence(c.disease, float(s.probabilities[k]), float(s.thresholds[k]), float(s.subset_low[k]), float(s.subset_high[k])))}</p>")
            parts.append(contributions_svg(waterfall_steps(base, contributions, logit)))
            parts.append(f"<p>{_e(contribution_sentence(contributions, present_by_modality(s)))} "
                         "The bars add up from the base value (no data) to the model output on the log-odds "
                         "scale (exact Shapley values of the fusion tokens).</p>")
        parts.append("<h2>Contributions for every disease (log-odds)</h2>"
                     + _table(contributions_frame(s), signed=tuple(contributions_frame(s).columns[1:])))
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


def report_pdf(content: ReportContent) -> bytes:
    """The report as a PDF (matplotlib's PDF backend): predictions, the waterfall, the evidence."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    c = content
    lines: list[tuple[str, str]] = [("h1", f"Patient {c.patient_id}"), ("p", c.demographics),
                                    ("small", f"Modalities: {c.modalities} · generated {c.generated}")]
    if c.synthetic_data or c.synthetic_model:
        lines.append(("warn", "Demonstration only (synthetic data or model). Not for clinical use."))
    s = c.scores
    lines.append(("h2", "Predictions"))
    if s is None:
        lines.append(("p", "No model was loaded: no predictions."))
    else:
        for row in predictions_frame(s).itertuples(index=False):
            lines.append(("mono", f"{row.probability:6.1%}  thr {row.threshold:5.1%}  {row.call:5s}  "
                                  f"range {row.range:9s}  {row.disease[:70]}"))
        if c.disease:
            k = s.index(c.disease)
            lines.append(("h2", f"Why: {c.disease[:80]}"))
            lines.append(("p", probability_sentence(c.disease, float(s.probabilities[k]), float(s.thresholds[k]))))
    for section, items in c.evidence.items():
        lines.append(("h2", section))
        lines.extend(("p", f"- {item}") for item in items[:20])

    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        fig, y = _new_page(Figure), 0.95
        for kind, text in lines:
            step = {"h1": 0.04, "h2": 0.035}.get(kind, 0.022)
            if y - step < 0.05:
                pdf.savefig(fig)
                fig, y = _new_page(Figure), 0.95
            size = {"h1": 16, "h2": 12, "small": 8, "mono": 8}.get(kind, 9)
            fig.text(0.07, y, _wrap(text, 110), fontsize=size, va="top", parse_math=False,
                     family="monospace" if kind == "mono" else "sans-serif",
                     weight="bold" if kind in ("h1", "h2") else "normal",
                     color="#a15c00" if kind == "warn" else "#222")
            y -= step * (1 + _wrap(text, 110).count("\n"))
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
    ax.set_title(disease[:80], fontsize=10, loc="left")
    return fig
