"""Signed attribution colours shared by the evidence panels (labs, notes, vitals, image overlay).

One convention everywhere, so a clinician learns it once: orange = pushes the prediction up,
blue = pushes it down, strength = opacity. The pair is the ends of ColorBrewer's PuOr / the
Okabe-Ito orange and blue: a diverging palette that stays distinguishable with red-green colour
blindness (deuteranopia, protanopia) and in greyscale by opacity. Red is kept for "abnormal"
(lab flags, out-of-range vitals), so an attribution is never mistaken for a flag. Pure functions.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable

import numpy as np

POSITIVE_RGB = (230, 97, 1)  # orange (PuOr #e66101): raises the predicted risk
NEGATIVE_RGB = (59, 76, 192)  # blue (#3b4cc0): lowers it
MAX_ALPHA = 0.85


def max_abs(weights: Iterable[float]) -> float:
    """The largest |weight| (finite ones only); 0.0 when there is none."""
    finite = [abs(float(w)) for w in weights if w is not None and math.isfinite(float(w))]
    return max(finite, default=0.0)


def signed_alpha(weight: float, scale: float, max_alpha: float = MAX_ALPHA) -> float:
    """Opacity in [0, max_alpha] for |weight| relative to `scale` (0 for a zero or unknown weight)."""
    if scale <= 0 or weight is None or not math.isfinite(weight):
        return 0.0
    return round(min(abs(weight) / scale, 1.0) * max_alpha, 3)


def signed_rgba(weight: float, scale: float, max_alpha: float = MAX_ALPHA) -> str:
    """CSS/plotly colour for a signed weight: orange when positive, blue when negative."""
    r, g, b = POSITIVE_RGB if weight >= 0 else NEGATIVE_RGB
    return f"rgba({r}, {g}, {b}, {signed_alpha(weight, scale, max_alpha)})"


def signed_rgba_pixels(weights: np.ndarray, scale: float, max_alpha: float = MAX_ALPHA,
                       signed: bool = True) -> np.ndarray:
    """signed_rgba for a whole map at once, as 8-bit RGBA pixels (rows x cols x 4): orange where > 0, blue
    where < 0 (with `signed=False` only orange, negatives transparent), opacity |w| / scale * max_alpha; what
    a Plotly heatmap with diverging_colorscale() and zmin/zmax = -/+scale draws, sent as an image instead."""
    w = np.nan_to_num(np.asarray(weights, dtype=np.float32))
    if not signed:
        w = np.maximum(w, 0.0)
    alpha = np.clip(np.abs(w) / scale, 0.0, 1.0) * max_alpha if scale > 0 else np.zeros_like(w)
    out = np.empty(w.shape + (4,), dtype=np.uint8)
    out[..., :3] = np.where((w < 0)[..., None], np.array(NEGATIVE_RGB, np.uint8), np.array(POSITIVE_RGB, np.uint8))
    out[..., 3] = np.round(alpha * 255).astype(np.uint8)
    return out


def diverging_colorscale() -> list[list]:
    """Plotly colorscale for signed maps on [-1, 1] -> [0, 1]: blue, transparent at zero, orange."""
    (r0, g0, b0), (r1, g1, b1) = NEGATIVE_RGB, POSITIVE_RGB
    return [
        [0.0, f"rgba({r0},{g0},{b0},{MAX_ALPHA})"],
        [0.5, f"rgba({r0},{g0},{b0},0)"],
        [0.5, f"rgba({r1},{g1},{b1},0)"],
        [1.0, f"rgba({r1},{g1},{b1},{MAX_ALPHA})"],
    ]


def effect_words(weight: float, scale: float) -> str:
    """'↑ strong' / '↓ weak': the direction and relative strength of an item's attribution (share of the
    largest |attribution| of this patient and disease: >= 50 % strong, >= 20 % moderate, else weak)."""
    if not math.isfinite(weight) or weight == 0 or scale <= 0:
        return "none"
    share = abs(weight) / scale
    size = "strong" if share >= 0.5 else "moderate" if share >= 0.2 else "weak"
    return ("↑ raises, " if weight > 0 else "↓ lowers, ") + size


def legend_html(scale: float, what: str = "attribution", numbers: bool = True) -> str:
    """A small colour bar: blue (lowers) -> white -> orange (raises), with the scale's end values
    (numbers=False: words only, for the clinician view; the exact figures are in the researcher expanders)."""
    (r0, g0, b0), (r1, g1, b1) = NEGATIVE_RGB, POSITIVE_RGB
    bar = (f"linear-gradient(to right, rgba({r0},{g0},{b0},{MAX_ALPHA}), rgba(255,255,255,1), "
           f"rgba({r1},{g1},{b1},{MAX_ALPHA}))")
    return (
        '<div style="display:flex;align-items:center;gap:8px;font-size:0.8rem;color:#444;">'
        f"<span>{html.escape(what)}:</span><span>lowers risk" + (f" &minus;{scale:.3g}" if numbers else "") + "</span>"
        f'<span style="display:inline-block;width:140px;height:12px;background:{bar};'
        'border:1px solid #bbb;border-radius:2px;"></span>'
        + ("<span>" + (f"+{scale:.3g} " if numbers else "") + "raises risk</span></div>")
    )
