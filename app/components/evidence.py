"""The model's evidence for one disease, in the evidence panels' formats (pure, no Streamlit).

`medfuse_core.explain.explain(record, predictor, labels=[disease])` returns dataclasses holding torch-free
numpy arrays; `panel_evidence` turns one label's `LabelEvidence` into plain dicts, lists and float32
arrays (cheap to pickle, so st.cache_data can keep it), in the same shapes the planted truth uses:

* labs: {lab display name: attribution} (one value per item; the table shades every row of it)
* notes: {note index: [(start, end, attribution)]} one span per sentence (record.notes[i].text offsets)
* note_tokens: {note index: [(start, end, attribution)]} word pieces of the top sentences only
* vitals: {channel: {hour bin: attribution}} hour bins from the index time (bin h = [h, h + 1) h);
  near-zero hours (below `min_share` of the largest |value|) are dropped, so the plot only shades
  hours that matter
* image: {image index: (rows, cols) float32 heatmap on the film's pixel grid}
* summary: the top items per modality in words, the methods, and the convergence deltas
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medfuse_core.numbers import finite

VITALS_MIN_SHARE = 0.02  # hours with |attribution| below 2% of the largest are not shaded


def _weight(x: float) -> float:
    """A shading weight: the attribution, 0 where it is not a finite number."""
    return finite(x, 0.0)


def empty_evidence() -> dict[str, Any]:
    return {"labs": {}, "labs_read": {}, "notes": {}, "note_tokens": {}, "vitals": {}, "image": {}, "summary": {}}


def panel_evidence(evidence: Any, *, min_share: float = VITALS_MIN_SHARE) -> dict[str, Any]:
    """Plain-data evidence (see the module docstring) from a `LabelEvidence` (None: all empty)."""
    out = empty_evidence()
    if evidence is None:
        return out
    for lab in evidence.labs:
        # one value per display name; if two item keys share a name, their attributions add up
        out["labs"][str(lab.name)] = out["labs"].get(str(lab.name), 0.0) + _weight(lab.attribution)
        # the result the model read (its last in the window), which may not be the latest shown
        out["labs_read"][str(lab.name)] = {"value": str(lab.value_text or ""), "unit": str(lab.unit or ""),
                                           "time": None if lab.time is None else str(lab.time)}
    for s in evidence.note_sentences:
        out["notes"].setdefault(int(s.note_index), []).append((int(s.start), int(s.end), _weight(s.attribution)))
    for t in evidence.note_tokens:
        out["note_tokens"].setdefault(int(t.note_index), []).append((int(t.start), int(t.end), _weight(t.attribution)))
    for spans in (*out["notes"].values(), *out["note_tokens"].values()):
        spans.sort()
    vitals = evidence.vitals
    if vitals is not None:
        matrix = np.nan_to_num(np.asarray(vitals.matrix, dtype=np.float64))
        top = float(np.max(np.abs(matrix))) if matrix.size else 0.0
        for c, channel in enumerate(vitals.channels):
            hours = {int(h): float(w) for h, w in enumerate(matrix[:, c]) if top > 0 and abs(w) >= min_share * top}
            if hours:
                out["vitals"][str(channel)] = hours
    image = evidence.image
    if image is not None and image.image_index is not None:
        out["image"][int(image.image_index)] = np.nan_to_num(np.asarray(image.heatmap, dtype=np.float32))
    out["summary"] = _summary(evidence)
    return out


def _summary(evidence: Any) -> dict[str, Any]:
    """Top evidence per modality, plus what produced it (for captions, the upload table and the report):
    `items` {route: [(what, attribution)]} for tables in words, `top` the same as exact text lines."""
    items: dict[str, list[tuple[str, float]]] = {}
    if evidence.labs:
        items["labs"] = [(f"{e.name} ({e.value_text or 'no value'} {e.unit}".rstrip()
                          + (f" at {str(e.time)[:16].replace('T', ' ')}" if e.time else "") + ")", _weight(e.attribution))
                         for e in evidence.labs[:3]]
    if evidence.note_sentences:
        # copy-forward notes repeat a sentence: each text once, its attributions added up
        by_text: dict[str, float] = {}
        for e in evidence.note_sentences:
            key = " ".join(str(e.text).split())
            by_text[key] = by_text.get(key, 0.0) + _weight(e.attribution)
        items["notes"] = [(f"\u201c{_clip(text)}\u201d", w)
                          for text, w in sorted(by_text.items(), key=lambda kv: -abs(kv[1]))[:3]]
    if evidence.vitals is not None and evidence.vitals.top:
        items["vitals"] = [(f"{str(s.channel).replace('Glascow', 'Glasgow')}, hours {s.start_hour}\u2013{s.end_hour}",
                            _weight(s.attribution)) for s in evidence.vitals.top[:3]]
    lines = {route: [f"{what}: {w:+.3f}" for what, w in rows] for route, rows in items.items()}
    if evidence.image is not None:
        lines["image"] = [f"{IMAGE_METHOD_NAMES.get(evidence.image.method, evidence.image.method)} map of image "
                          f"{(evidence.image.image_index or 0) + 1}"]
        items["image"] = [(f"evidence map of image {(evidence.image.image_index or 0) + 1}", float("nan"))]
    return {"top": lines, "items": items, "deltas": {k: _weight(v) for k, v in (evidence.convergence_delta or {}).items()},
            "notes_token_level": str(evidence.notes_token_level or "")}


IMAGE_METHOD_NAMES = {"gradcam_ig": "Grad-CAM x integrated gradients", "smoothed_ig": "Smoothed integrated-gradients", "gradcam": "Grad-CAM", "ig": "Integrated gradients"}


def _clip(text: str, n: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def attribution_scale(evidence: dict[str, Any], route: str) -> float:
    """Largest |attribution| of one route ('labs', 'notes', 'note_tokens', 'vitals', 'image'); 0 if none."""
    values = evidence.get(route) or {}
    if route == "labs":
        flat = list(values.values())
    elif route in ("notes", "note_tokens"):
        flat = [w for spans in values.values() for _, _, w in spans]
    elif route == "vitals":
        flat = [w for hours in values.values() for w in hours.values()]
    else:
        flat = [float(np.max(np.abs(a))) for a in values.values() if np.size(a)]
    return max((abs(float(w)) for w in flat), default=0.0)
