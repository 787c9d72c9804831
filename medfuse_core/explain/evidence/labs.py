"""Lab evidence: Captum LayerIntegratedGradients on the lab encoder's value embedding (or plain IG on
the value features), one attribution per lab item, named and given its last raw value from the record."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from medfuse_core.explain.concurrency import thread_scoped
from medfuse_core.explain.evidence.results import LabEvidence
from medfuse_core.features.labs import FEATURE_NAMES

if TYPE_CHECKING:
    from medfuse_core.explain.evidence.explainer import EvidenceExplainer

LAB_METHODS = ("embedding", "values")
LAB_IG_STEPS = 32  # a review's lab map ("embedding") at most: its |convergence delta| is float noise at 32 steps
# (max 1.9e-6 over 10 demo patients, 9.5e-7 at 64) and it ranks the labs as a 128-step reference does
# (benchmarks/results/review_evidence.md); more steps only cost time


def lab_attributions(ex: EvidenceExplainer, label: str | int, n_steps: int = 64, method: str = "embedding") -> tuple[list[LabEvidence], float]:
    """Per lab item attributions, ranked by |attribution|; and |convergence delta|."""
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    if method not in LAB_METHODS:
        raise ValueError(f"lab method {method!r}: expected one of {LAB_METHODS}")
    if not ex.has("labs") or not len(ex.index.lab_keys):
        return [], 0.0
    k = ex.label_index(label)
    x = ex.batch.lab_values.float()
    with ex.gradients():
        if method == "embedding":
            algo = LayerIntegratedGradients(ex.forward_of("lab_values", "labs"),
                                            thread_scoped(ex.model.lab_encoder.value_embedding))
        else:
            algo = IntegratedGradients(ex.forward_of("lab_values", "labs"))
        attr, delta = algo.attribute(x, baselines=torch.zeros_like(x), target=k, n_steps=n_steps,
                                     return_convergence_delta=True)
    attr = attr.detach()[0].double()  # (L, d) or (L, V)
    per_item = attr.sum(-1).cpu().numpy()
    raw = raw_lab_values(ex)
    items = ex.features.lab_items
    out = []
    for i, (key, name) in enumerate(zip(ex.index.lab_keys, ex.index.lab_names)):
        value, text, unit, time = raw.get(int(items[i]), (None, "", "", None))
        out.append(LabEvidence(
            key=key, name=str(name), attribution=float(per_item[i]), value=value, value_text=text, unit=unit, time=time,
            features={f: float(v) for f, v in zip(FEATURE_NAMES, ex.features.lab_values[i])},
            feature_attributions=({f: float(v) for f, v in zip(FEATURE_NAMES, attr[i].tolist())} if method == "values" else {}),
        ))
    out.sort(key=lambda e: -abs(e.attribution))
    return out, float(delta.abs().max())

def raw_lab_values(ex: EvidenceExplainer) -> dict[int, tuple[float | None, str, str, str | None]]:
    """item id -> (value, value text, unit, time) of its last numeric result in the window."""
    if ex.record is None or ex.vocabulary is None or not len(ex.record.labs.table):
        return {}
    table = ex.record.labs.table
    if ex.record.index_time is not None and not pd.isna(ex.record.index_time):
        start = pd.Timestamp(ex.record.index_time)
        table = table[(table["time"] >= start) & (table["time"] <= start + pd.Timedelta(hours=float(ex.hours)))]
    table = table[table["value"].notna()]
    if table.empty:
        return {}
    ids = ex.vocabulary.ids_of(table["itemid"], table["item"])
    table = table.assign(_id=ids, _row=np.arange(len(table))).sort_values(["time", "_row"], na_position="first")
    out = {}
    for item_id, rows in table.groupby("_id", sort=False):
        row = rows.iloc[-1]
        time = None if pd.isna(row["time"]) else str(row["time"])
        out[int(item_id)] = (float(row["value"]), str(row["value_text"]), str(row["unit"]), time)
    return out
