"""Figures and tables of the disentanglement lab (pure: plotly figures and DataFrames, no Streamlit).

Token colours: one hue per modality (Okabe-Ito, colour-blind safe) for the specific tokens and grey for
the shared token, the same in every lab figure.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.components.wording import TOKEN_KEYS, TOKEN_LABELS
from app.components.worklist import short_label
from medfuse_core.modalities import REGISTRY, SHARED_COLOUR, SHARED_TOKEN
from medfuse_core.record import MODALITIES

if TYPE_CHECKING:  # the type only: components import no torch
    from medfuse_core.explain.disentanglement import CohortDiagnostics

MODALITY_NAMES = REGISTRY.display_names()
MODALITY_COLOURS = {s.key: s.colour for s in REGISTRY}
TOKEN_COLOURS = {**{s.token_name: s.colour for s in REGISTRY}, SHARED_TOKEN: SHARED_COLOUR}


def shares_frame(diag: CohortDiagnostics) -> pd.DataFrame:
    """Disease x token mean share of |contribution| (rows sum to 1 where defined)."""
    frame = pd.DataFrame(diag.shares, columns=[TOKEN_LABELS[t] for t in TOKEN_KEYS])
    frame.insert(0, "disease", [short_label(d) for d in diag.labels])
    return frame


def shares_figure(diag: CohortDiagnostics, height: int | None = None) -> go.Figure:
    """Horizontal stacked bars: per disease, the mean share of |contribution| of each token."""
    names = [short_label(d) for d in diag.labels]
    fig = go.Figure()
    for j, token in enumerate(TOKEN_KEYS):
        fig.add_trace(go.Bar(
            y=names, x=diag.shares[:, j], orientation="h", name=TOKEN_LABELS[token],
            marker={"color": TOKEN_COLOURS[token]},
            hovertemplate="%{y}<br>" + TOKEN_LABELS[token] + ": %{x:.0%}<extra></extra>"))
    fig.update_layout(barmode="stack", height=height or 28 * len(names) + 120,
                      margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis={"tickformat": ".0%", "range": [0, 1]},
                      yaxis={"autorange": "reversed"}, legend={"orientation": "h", "y": -0.12},
                      plot_bgcolor="white")
    return fig


def mi_frame(diag: CohortDiagnostics) -> pd.DataFrame:
    """The MI estimates as a table a reader can check: estimator, between what, value (nats)."""
    rows = [{"estimate": "InfoNCE (lower bound)", "between": "shared projections of pairs of modalities",
             "nats": diag.info_nce, "note": f"at most log N = {diag.info_nce_ceiling:.2f}; <= 0: no shared information detected"}]
    for m in MODALITIES:
        v = diag.vclub.get(m, float("nan"))
        rows.append({"estimate": "vCLUB (upper bound)", "between": f"{MODALITY_NAMES[m]}: specific vs shared",
                     "nats": v, "note": "fewer than 2 patients" if math.isnan(v) else "near 0 = disentangled"})
    return pd.DataFrame(rows)


def cka_figure(cka: np.ndarray, height: int = 320) -> go.Figure:
    """4 x 4 heatmap of linear CKA between the modalities' shared projections (sequential, 0..1)."""
    names = [MODALITY_NAMES[m] for m in MODALITIES]
    text = [["–" if math.isnan(v) else f"{v:.2f}" for v in row] for row in cka]
    fig = go.Figure(go.Heatmap(z=cka, x=names, y=names, zmin=0, zmax=1, colorscale="Cividis", text=text,
                               texttemplate="%{text}", hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
                               colorbar={"title": {"text": "CKA"}, "thickness": 12}))
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, yaxis={"autorange": "reversed"})
    return fig


def probe_frame(diag: CohortDiagnostics) -> pd.DataFrame:
    rows = []
    for what, probe in (("shared c_m (leakage)", diag.probe), ("specific s_m (reference)", diag.specific_probe)):
        rows.append({"decoding the modality from": what, "accuracy": probe.accuracy, "chance": probe.chance,
                     "above chance": probe.above_chance, "rows": probe.n, "folds": probe.folds})
    return pd.DataFrame(rows)


def probe_sentence(diag: CohortDiagnostics) -> str:
    p = diag.probe
    if math.isnan(p.accuracy):
        return "Too few patients with two or more modalities to run the leakage probe."
    verdict = ("close to chance: the shared space hides which modality it came from"
               if p.above_chance < 0.1 else
               "well above chance: the shared projections still carry modality-specific information (leakage)")
    return (f"A linear probe decodes the modality from the shared projection with {p.accuracy:.0%} accuracy "
            f"(chance {p.chance:.0%}, {p.folds}-fold cross-validation grouped by patient): {verdict}.")


def pca_figure(diag: CohortDiagnostics, colour_by: str = "modality", label: str | None = None,
               height: int = 420) -> go.Figure:
    """2-D PCA of specific (circles) and shared (crosses) projections, coloured by modality or by
    whether the patient has `label`."""
    fig = go.Figure()
    xy = diag.pca
    kinds = (("specific", "circle"), ("shared", "x"))
    if colour_by == "label" and label in diag.labels:
        k = diag.labels.index(label)
        truth = diag.truth[diag.pca_patient, k] if len(diag.pca_patient) else np.zeros(0)
        groups = [("positive", truth == 1, "#D55E00"), ("negative", truth == 0, "#56B4E9"),
                  ("unknown", np.isnan(truth), "#bbbbbb")]
        for kind, symbol in kinds:
            for name, mask, colour in groups:
                rows = (diag.pca_kind == kind) & mask
                if rows.any():
                    fig.add_trace(go.Scattergl(
                        x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=f"{name} · {kind}",
                        marker={"color": colour, "symbol": symbol, "size": 7, "opacity": 0.8}))
    else:
        for kind, symbol in kinds:
            for i, m in enumerate(MODALITIES):
                rows = (diag.pca_kind == kind) & (diag.pca_modality == i)
                if rows.any():
                    fig.add_trace(go.Scattergl(
                        x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=f"{MODALITY_NAMES[m]} · {kind}",
                        marker={"color": MODALITY_COLOURS[m], "symbol": symbol, "size": 7, "opacity": 0.8}))
    r = diag.pca_ratio
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="white",
                      xaxis={"title": {"text": f"PC1 ({r[0]:.0%})"}, "zeroline": False, "gridcolor": "#eee"},
                      yaxis={"title": {"text": f"PC2 ({r[1]:.0%})"}, "zeroline": False, "gridcolor": "#eee"},
                      legend={"orientation": "h", "y": -0.2})
    return fig
