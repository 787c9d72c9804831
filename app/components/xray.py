"""Chest X-ray panel: window/level, display downsampling, plotly viewer with an attribution overlay.

Pixels arrive in display orientation in [0, 1] (bone bright). Window/level works in the same
display units: a window of `width` centred on `centre` maps centre - width/2 -> black and
centre + width/2 -> white, saturating outside. The viewer is a plotly image of the film, sent as a PNG
(zoom and pan on, equal aspect); the overlay is an RGBA PNG over it, transparent at zero, with
an invisible coarse heatmap of the same values for the hover and the colour bar.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from app.components.figures import unvalidated
from app.components.shading import MAX_ALPHA, POSITIVE_RGB, diverging_colorscale, signed_rgba_pixels
from medfuse_core.record import ChestImage

MAX_DISPLAY_SIDE = 768
# The attribution overlay's colour wash is sent at up to 256 px a side (block means) as an RGBA PNG (a float
# per cell it was 1.8 MB of the 1.9 MB a disease switch sent for a 512 px demo film, issue 18); the values
# under the mouse come from block means at up to HOVER_OVERLAY_SIDE.
MAX_OVERLAY_SIDE = 256
HOVER_OVERLAY_SIDE = 64  # the attribution read under the mouse: block means at up to 64 px a side


def window_level(pixels: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Map [centre - width/2, centre + width/2] linearly onto [0, 1], clipping outside."""
    width = max(float(width), 1e-6)
    low = float(centre) - width / 2
    return np.clip((np.asarray(pixels, dtype=np.float32) - low) / width, 0.0, 1.0)


def display_factor(shape: tuple[int, ...], max_side: int = MAX_DISPLAY_SIDE) -> int:
    """Integer block size that brings the longer side to <= max_side (1 when already small)."""
    return max(1, math.ceil(max(shape[:2]) / max_side))


def downsample(array: np.ndarray, factor: int) -> np.ndarray:
    """Block mean by an integer factor (edges that do not fill a block are padded by repetition)."""
    if factor <= 1:
        return np.asarray(array, dtype=np.float32)
    a = np.asarray(array, dtype=np.float32)
    rows, cols = a.shape
    pr, pc = (-rows) % factor, (-cols) % factor
    if pr or pc:
        a = np.pad(a, ((0, pr), (0, pc)), mode="edge")
    r, c = a.shape
    return a.reshape(r // factor, factor, c // factor, factor).mean(axis=(1, 3))


def png_data_uri(pixels: np.ndarray) -> str:
    """An 8-bit grey (rows x cols) or RGBA (rows x cols x 4) image as a data: URI of a PNG."""
    buffer = io.BytesIO()
    pixels = np.asarray(pixels, dtype=np.uint8)
    Image.fromarray(pixels, mode="RGBA" if pixels.ndim == 3 else "L").save(buffer, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def check_overlay(pixels: np.ndarray, overlay: np.ndarray | None) -> None:
    """An overlay must be a finite 2-D map with the image's shape."""
    if overlay is None:
        return
    overlay = np.asarray(overlay)
    if overlay.shape != pixels.shape:
        raise ValueError(f"overlay shape {overlay.shape} does not match image shape {pixels.shape}")


def film_png(pixels: np.ndarray, centre: float = 0.5, width: float = 1.0,
             max_side: int = MAX_DISPLAY_SIDE) -> tuple[str, int]:
    """The windowed film as a PNG data URI, at up to `max_side` px a side, and its block size (the page caches
    it per image and window: it is the same for every disease, and encoding it is half the viewer's cost)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    factor = display_factor(pixels.shape, max_side)
    shown = downsample(window_level(pixels, centre, width), factor)
    return png_data_uri(np.round(shown * 255).astype(np.uint8)), factor  # 8 bits is what the screen shows


def xray_figure(pixels: np.ndarray, centre: float = 0.5, width: float = 1.0, *,
                overlay: np.ndarray | None = None, overlay_opacity: float = 0.5, signed: bool = True,
                max_side: int = MAX_DISPLAY_SIDE, overlay_side: int = MAX_OVERLAY_SIDE,
                height: int = 560, film: tuple[str, int] | None = None) -> go.Figure:
    """The viewer figure. `overlay` (same shape as `pixels`) is drawn over the film: with `signed`,
    blue < 0 < orange, transparent at zero; otherwise a single-hue map of non-negative weights. The film is
    sent at up to `max_side` px a side (`film`: film_png's result for these pixels and window, when the caller
    has it cached), the overlay at up to `overlay_side` (block means), both placed in the image's own pixel
    coordinates so they line up whatever the two factors. Built as a dict spec (app/components/figures.py)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    check_overlay(pixels, overlay)
    source, factor = film or film_png(pixels, centre, width, max_side)
    rows, cols = pixels.shape
    # the film goes as a PNG the browser decodes natively, not as a heatmap Plotly colours cell by cell in
    # JavaScript (issue 18: half the time to draw the viewer in Chromium, 40 % fewer bytes for a 512 px
    # film); its first pixel's centre sits at the original coordinates of its block, so overlays line up
    first = (factor - 1) / 2
    data: list[dict] = [{"type": "image", "source": source, "x0": first, "y0": first, "dx": factor, "dy": factor,
                         "hovertemplate": "x %{x:.0f}, y %{y:.0f}<extra></extra>", "name": "film"}]
    if overlay is not None:
        values = np.nan_to_num(np.asarray(overlay, dtype=np.float32))
        step = display_factor(pixels.shape, min(max_side, overlay_side))
        small = downsample(values, step)
        scale = float(np.max(np.abs(small))) or 1.0
        # the colour wash goes as an RGBA PNG over the film (the browser decodes it natively): as a 256 x 256
        # heatmap it was ~600 KB of JSON that Plotly coloured cell by cell on every disease switch (issue 18)
        wash = signed_rgba_pixels(small, scale, MAX_ALPHA if signed else 1.0, signed)
        data.append({"type": "image", "source": png_data_uri(wash), "x0": (step - 1) / 2, "y0": (step - 1) / 2,
                     "dx": step, "dy": step, "opacity": overlay_opacity, "hoverinfo": "skip", "name": "attribution"})
        # the values under the mouse and the colour bar: a coarse, invisible heatmap on the same scale
        coarse_step = display_factor(pixels.shape, min(max_side, HOVER_OVERLAY_SIDE))
        coarse = downsample(values, coarse_step)
        if signed:
            colorscale, zmin = diverging_colorscale(), -scale
        else:
            r, g, b = POSITIVE_RGB
            colorscale, zmin = [[0, f"rgba({r},{g},{b},0)"], [1, f"rgba({r},{g},{b},1)"]], 0.0
        data.append({"type": "heatmap", "z": coarse, "x": (np.arange(coarse.shape[1]) + 0.5) * coarse_step - 0.5,
                     "y": (np.arange(coarse.shape[0]) + 0.5) * coarse_step - 0.5, "colorscale": colorscale,
                     "zmin": zmin, "zmax": scale, "opacity": 0, "showscale": True,
                     "colorbar": {"title": {"text": "attribution", "side": "right"}, "thickness": 12},
                     "hovertemplate": "attribution %{z:.3g}<extra></extra>", "name": "attribution values"})
    axis = {"showticklabels": False, "showgrid": False, "zeroline": False, "fixedrange": False, "constrain": "domain"}
    layout = {"xaxis": {**axis, "range": [-0.5, cols - 0.5]},
              "yaxis": {**axis, "range": [rows - 0.5, -0.5], "scaleanchor": "x", "scaleratio": 1},
              "height": height, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "dragmode": "zoom",
              "plot_bgcolor": "black"}
    return unvalidated({"data": data, "layout": layout})


def image_label(index: int, image: ChestImage, hours: float | None = None) -> str:
    when = image.time.strftime("%Y-%m-%d %H:%M") if image.time is not None and pd.notna(image.time) else "time unknown"
    rel = f" ({hours:+.1f} h)" if hours is not None and not math.isnan(hours) else ""
    return f"{index + 1}: {image.view or 'view unknown'} · {when}{rel}"


def metadata_frame(image: ChestImage) -> pd.DataFrame:
    """Header facts a radiologist checks, as (field, value) rows; 'not given' where unknown."""
    m = image.metadata

    def given(v: object) -> str:
        return "not given" if v in (None, "") else str(v)

    spacing = (f"{m.pixel_spacing_mm[0]:g} × {m.pixel_spacing_mm[1]:g} mm"
               if m.pixel_spacing_mm else "not given")
    rows, cols = image.pixels.shape[:2]
    facts = [
        ("view", given(image.view or m.view_position)),
        ("modality", given(m.modality)),
        ("study date", given(m.study_date)),
        ("pixel spacing", spacing),
        ("photometric", given(m.photometric)),
        ("bits stored", given(m.bits_stored)),
        ("size", f"{cols} × {rows} px"),
        ("format", given(m.file_format)),
        ("transfer syntax", given(m.transfer_syntax)),
    ]
    return pd.DataFrame(facts, columns=["field", "value"])


def grey_levels(image: ChestImage) -> int:
    """The film's own top grey level (2^bits stored - 1: 4095 for a 12-bit DICOM, 255 for PNG/JPEG),
    so the window sliders run in the image's values rather than 0-1; 255 when the header does not say."""
    bits = image.metadata.bits_stored if image.metadata is not None else None
    try:
        bits = int(bits) if bits else 8
    except (TypeError, ValueError):
        bits = 8
    return 2 ** min(max(bits, 1), 16) - 1
