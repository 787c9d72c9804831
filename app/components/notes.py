"""Clinical notes panel: safe HTML for note text, with optional weighted highlights.

Safety rule: every character of note text (and of time/category) goes through `html.escape`
*before* any markup of ours is added; the only tags in the output are the ones written here. A note
holding `<script>` therefore shows as text. Offsets are Python string indices (code points), the
same as truth.json's note spans and the tokenizer's character offsets.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

import pandas as pd

from app.components.shading import NEGATIVE_RGB, POSITIVE_RGB, max_abs, signed_alpha

Span = tuple[int, int, float]  # (start, end, weight): text[start:end], signed weight
SEARCH_RGB = (240, 228, 66)  # Okabe-Ito yellow for "find in notes" hits (not the attribution orange)


def _clip_spans(text: str, spans: Sequence[Span]) -> list[Span]:
    out = []
    for start, end, weight in spans:
        start, end = max(0, int(start)), min(len(text), int(end))
        if end > start:
            out.append((start, end, float(weight)))
    return out


def _mark(piece: str, weight: float, scale: float, rgb: tuple[int, int, int] | None) -> str:
    if rgb is None:
        rgb = POSITIVE_RGB if weight >= 0 else NEGATIVE_RGB
    alpha = max(signed_alpha(weight, scale), 0.15)
    r, g, b = rgb
    return (f'<mark data-w="{weight:.4g}" title="weight {weight:+.3g}" '
            f'style="background: rgba({r}, {g}, {b}, {alpha}); color: inherit; padding: 0 1px; '
            f'border-radius: 2px;">{html.escape(piece)}</mark>')


def highlight_spans(text: str, spans: Sequence[Span], *, rgb: tuple[int, int, int] | None = None) -> str:
    """Escaped `text` with each span wrapped in `<mark>`, opacity by |weight|, orange/blue by sign.

    Overlapping spans are cut at every span boundary; a piece covered by several spans gets the sum
    of their weights, so overlaps read as stronger. Adjacent spans stay separate marks. Spans outside
    the text are clipped; empty ones ignored. `rgb` forces one colour (search hits).
    """
    spans = _clip_spans(text, spans)
    if not spans:
        return html.escape(text)
    cuts = sorted({0, len(text), *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    pieces: list[tuple[int, int, float | None]] = []
    for a, b in zip(cuts, cuts[1:]):
        covering = [w for s, e, w in spans if s <= a and b <= e]
        pieces.append((a, b, sum(covering) if covering else None))
    scale = max_abs(w for _, _, w in pieces if w is not None) or 1.0
    out = []
    for a, b, w in pieces:
        piece = text[a:b]
        out.append(html.escape(piece) if w is None else _mark(piece, w, scale, rgb))
    return "".join(out)


def find_spans(text: str, query: str) -> list[Span]:
    """Case-insensitive literal matches of `query` as weight-1 spans (for the "find in notes" box)."""
    query = query.strip()
    if not query:
        return []
    return [(m.start(), m.end(), 1.0) for m in re.finditer(re.escape(query), text, flags=re.IGNORECASE)]


def note_heading(time: pd.Timestamp | None, category: str, hours: float) -> str:
    """Plain-text heading: '+2.7 h · 2166-06-13 09:16 · Physician' (not HTML; escape where embedded)."""
    when = time.strftime("%Y-%m-%d %H:%M") if time is not None and pd.notna(time) else "time unknown"
    rel = f"{hours:+.1f} h · " if hours is not None and not (isinstance(hours, float) and math.isnan(hours)) else ""
    return f"{rel}{when} · {category or 'uncategorised'}"


def note_html(heading: str, text: str, spans: Sequence[Span] = (), *, max_height_px: int = 420,
              rgb: tuple[int, int, int] | None = None) -> str:
    """One note as a self-contained HTML block: escaped heading, escaped body with highlights,
    newlines kept (white-space: pre-wrap), scrolling when long."""
    body = highlight_spans(text, spans, rgb=rgb)
    return (
        '<div class="mf-note" style="border:1px solid #d9dde3;border-radius:6px;margin-bottom:10px;">'
        '<div style="background:#f3f5f8;padding:4px 10px;font-size:0.85rem;font-weight:600;color:#333;">'
        f"{html.escape(heading)}</div>"
        f'<div class="mf-note-text" style="white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;'
        f'font-size:0.82rem;line-height:1.35;padding:8px 10px;max-height:{max_height_px}px;overflow-y:auto;">'
        f"{body}</div></div>"
    )


def whole_words(text: str, spans: Sequence[Span]) -> list[Span]:
    """Word-piece spans ("sy", "sto", "lic") merged into the whole words they belong to ("systolic"),
    each word's weight the sum of its pieces' weights, so a highlight never splits a word."""
    merged: dict[tuple[int, int], float] = {}
    for start, end, weight in _clip_spans(text, spans):
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "'") and text[start].isalnum():
            start -= 1
        while end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
            end += 1
        merged[(start, end)] = merged.get((start, end), 0.0) + float(weight)
    return sorted((s, e, w) for (s, e), w in merged.items())
