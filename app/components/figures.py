"""Plotly figures from plain dict specs, built without Plotly's per-property validation.

go.Figure checks every property it is given against Plotly's schema: 17 ms for the X-ray viewer and ~10 ms
for the risk chart, paid again on every disease switch (issue 18), although these figures come from fixed
code. Their builders return specs made of dicts, lists and numpy arrays; the tests check once that Plotly
accepts each of them (tests/app/test_figures.py builds every spec validated), and the page hands
st.plotly_chart `unvalidated(spec)`: `_validate=False` is Plotly's own switch for this (BaseFigure). The
default template, which a validated figure gets, is added here, so the JSON sent to the browser is the
validated figure's (tested).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio


def unvalidated(spec: dict[str, Any]) -> go.Figure:
    """A go.Figure of `spec` ({"data": [...], "layout": {...}}) without validating it again, with the default
    template a validated go.Figure would get."""
    layout = spec.setdefault("layout", {})
    if "template" not in layout:
        layout["template"] = copy.deepcopy(_template(pio.templates.default))
    return go.Figure(spec, _validate=False)


@functools.cache
def _template(name: str | None) -> dict[str, Any]:
    """The template `name` as a validated figure carries it (Streamlit makes its own the default on import)."""
    return go.Figure().to_dict()["layout"].get("template", {}) if name else {}
