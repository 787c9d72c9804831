"""Vitals evidence: Integrated Gradients on the (hours x 76) discretized input, summed per clinical
channel -> (hours, 17), and the ranked (channel, contiguous hour range) spans."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from medfuse_core.explain.evidence.results import VitalsEvidence, VitalsSpan
from medfuse_core.features.vitals import feature_names as vitals_feature_names
from medfuse_core.sources.vital_channels import CHANNEL_NAMES

if TYPE_CHECKING:
    from medfuse_core.explain.evidence.explainer import EvidenceExplainer


def vitals_channel_index() -> np.ndarray:
    """int (76,): the clinical channel (CHANNEL_NAMES index) of each discretized column."""
    position = {name: i for i, name in enumerate(CHANNEL_NAMES)}
    out = []
    for name in vitals_feature_names():
        base = name[len("mask->"):] if name.startswith("mask->") else name.split("->")[0]
        out.append(position[base])
    return np.asarray(out, dtype=np.int64)


def _best_range(values: np.ndarray, sign: float) -> tuple[int, int, float]:
    """Contiguous [start, end) of maximal sign * sum (Kadane); the range's signed sum."""
    best, best_range, run, start = -np.inf, (0, 1), 0.0, 0
    for i, v in enumerate(sign * values):
        if run <= 0:
            run, start = float(v), i
        else:
            run += float(v)
        if run > best:
            best, best_range = run, (start, i + 1)
    a, b = best_range
    return a, b, float(values[a:b].sum())


def vitals_spans(matrix: np.ndarray, top: int = 5) -> list[VitalsSpan]:
    """Channels ranked by |total attribution|, each with the hour range that holds most of it."""
    totals = matrix.sum(axis=0)
    spans = []
    for c in np.argsort(-np.abs(totals), kind="stable")[:top]:
        if totals[c] == 0:
            continue
        a, b, value = _best_range(matrix[:, c], 1.0 if totals[c] > 0 else -1.0)
        spans.append(VitalsSpan(CHANNEL_NAMES[c], int(a), int(b), value, float(totals[c])))
    return spans


def vitals_attributions(ex: EvidenceExplainer, label: str | int, n_steps: int = 64, top: int = 5) -> VitalsEvidence | None:
    from captum.attr import IntegratedGradients

    if not ex.has("vitals"):
        return None
    k = ex.label_index(label)
    x = ex.batch.vitals.float()
    with ex.gradients():
        attr, delta = IntegratedGradients(ex.forward_of("vitals", "vitals")).attribute(
            x, baselines=torch.zeros_like(x), target=k, n_steps=n_steps, return_convergence_delta=True)
    cols = attr.detach()[0].double().cpu().numpy()  # (T, 76)
    channel = vitals_channel_index()
    matrix = np.zeros((cols.shape[0], len(CHANNEL_NAMES)), dtype=np.float64)
    np.add.at(matrix, (slice(None), channel), cols)
    # Evidence never credits data the patient does not have: cells holding a channel's imputed normal value
    # (a channel never measured, or hours before its first measurement) are IG's baseline bookkeeping, not
    # evidence; they are zeroed and their total kept apart (imputed_attribution) for researchers.
    cells = getattr(ex.index, "vitals_patient_cells", None)
    imputed = 0.0
    if cells is not None and cells.shape == matrix.shape:
        imputed = float(matrix[~cells].sum())
        matrix = np.where(cells, matrix, 0.0)
    return VitalsEvidence(matrix.astype(np.float32), list(CHANNEL_NAMES), vitals_spans(matrix, top),
                          float(delta.abs().max()), imputed)
