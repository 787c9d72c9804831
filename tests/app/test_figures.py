"""The figures built without validation (app/components/figures.py) are ones Plotly accepts, and what the
browser receives is exactly what the validated figure would have sent."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from app.components import xray as X
from app.components.figures import unvalidated


def _same_as_validated(fig: go.Figure) -> None:
    spec = fig.to_dict()
    checked = go.Figure(spec)  # raises ValueError on any property Plotly does not know or accept
    assert json.loads(pio.to_json(checked.to_dict(), validate=False)) == json.loads(pio.to_json(spec, validate=False))


@pytest.mark.parametrize("signed", [True, False])
def test_xray_viewer_spec_is_valid_plotly(signed: bool) -> None:
    pixels = np.random.default_rng(0).random((300, 200), dtype=np.float32)
    overlay = np.random.default_rng(1).normal(size=(300, 200)).astype(np.float32)
    _same_as_validated(X.xray_figure(pixels, 0.4, 0.8, overlay=overlay, overlay_opacity=0.3, signed=signed))
    _same_as_validated(X.xray_figure(pixels))


def test_cached_film_is_the_film_the_viewer_would_make() -> None:
    pixels = np.random.default_rng(0).random((900, 600), dtype=np.float32)
    film = X.film_png(pixels, 0.3, 0.5)
    assert film[1] == 2  # 900 px -> blocks of 2 under MAX_DISPLAY_SIDE
    made, given = X.xray_figure(pixels, 0.3, 0.5), X.xray_figure(pixels, 0.3, 0.5, film=film)
    assert made.to_dict() == given.to_dict()


def test_an_invalid_spec_is_caught_by_the_check_not_by_unvalidated() -> None:
    """The check above can fail: a misspelt property passes unvalidated() but not go.Figure."""
    bad = {"data": [{"type": "image", "sourse": "data:image/png;base64,"}], "layout": {}}
    unvalidated(bad)
    with pytest.raises(ValueError):
        go.Figure(bad)
