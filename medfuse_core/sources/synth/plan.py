"""The latent plan of one synthetic stay: which modalities exist, which routes carry evidence, when.

Every modality generator reads the same plan, so that, e.g., the septic hours of the vitals and the
septic lab draws agree. Modality availability is drawn independently of the diseases: a missing
image must not itself tell the model anything about a disease, or the route truth would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medfuse_core.record import MODALITIES
from medfuse_core.sources.synth.diseases import DISEASES, Conditions, sample_conditions

# Probability that a stay has the modality (MIMIC-like: many stays without a chest film).
AVAILABILITY = {"labs": 0.97, "notes": 0.85, "vitals": 0.97, "image": 0.55}
P_SECOND_IMAGE = 0.2  # of stays with an image
P_INCOMPLETE = 0.25  # a shared-route positive loses the evidence of one available route
WINDOW_START_HOURS = (48.0 + 2.0, 48.0 + 8.0)  # the observed window ends a little after 48 h

Window = tuple[float, float]


@dataclass
class PatientPlan:
    """Everything the modality generators must agree on."""

    index: int
    patient_id: str
    conditions: Conditions
    index_time: pd.Timestamp
    end_hours: float  # observation window [0, end_hours]
    available: dict[str, bool]
    planted: dict[str, tuple[str, ...]]  # disease key -> modalities where evidence is planted
    windows: dict[str, list[Window]] = field(default_factory=dict)  # disease key -> active hours
    n_images: int = 0

    def plants(self, disease: str, modality: str) -> bool:
        return modality in self.planted.get(disease, ())

    def window(self, disease: str) -> list[Window]:
        return self.windows.get(disease, [])


def _index_time(rng: np.random.Generator) -> pd.Timestamp:
    """A MIMIC-style shifted admission time (years 2100-2200), to the minute."""
    day = pd.Timestamp("2100-01-01") + pd.Timedelta(days=int(rng.integers(0, 365 * 100)))
    return day + pd.Timedelta(minutes=int(rng.integers(0, 24 * 60)))


def _planted_routes(rng: np.random.Generator, conditions: Conditions, available: dict[str, bool]) -> dict[str, tuple[str, ...]]:
    planted: dict[str, tuple[str, ...]] = {}
    for disease in DISEASES:
        if not conditions.has(disease.key):
            continue
        routes = [m for m in disease.modalities if available[m]]
        if not disease.single_route and len(routes) >= 2 and rng.random() < P_INCOMPLETE:
            routes.pop(int(rng.integers(len(routes))))
        planted[disease.key] = tuple(routes)
    return planted


def _episodes(rng: np.random.Generator, end: float) -> list[Window]:
    """Dysrhythmia: persistent (a quarter of patients) or 1-3 separate episodes of 3-9 h."""
    if rng.random() < 0.25:
        return [(0.0, end)]
    out: list[Window] = []
    for _ in range(int(rng.integers(1, 4))):
        length = float(rng.uniform(3.0, 9.0))
        start = float(rng.uniform(0.0, end - length))
        if all(start > b + 2.0 or start + length < a - 2.0 for a, b in out):
            out.append((start, start + length))
    return sorted(out)


def _windows(rng: np.random.Generator, conditions: Conditions, end: float) -> dict[str, list[Window]]:
    windows: dict[str, list[Window]] = {}
    if conditions.has("sepsis"):
        onset = float(rng.uniform(0.0, 8.0))
        windows["sepsis"] = [(onset, min(end, onset + float(rng.uniform(14.0, 30.0))))]
    if conditions.has("pneumonia"):
        onset = float(rng.uniform(0.0, 10.0))
        windows["pneumonia"] = [(onset, min(end, onset + float(rng.uniform(16.0, 40.0))))]
    if conditions.has("dysrhythmia"):
        windows["dysrhythmia"] = _episodes(rng, end)
    if conditions.has("renal"):
        # creatinine starts rising at onset (before admission for half the patients)
        onset = float(rng.uniform(-12.0, 0.0)) if rng.random() < 0.5 else float(rng.uniform(0.0, 16.0))
        windows["renal"] = [(onset, end)]
    if conditions.has("electrolytes"):
        windows["electrolytes"] = [(0.0, min(end, float(rng.uniform(20.0, end + 10.0))))]
    if conditions.has("hypertension"):
        windows["hypertension"] = _outside(windows.get("sepsis", []), end)
    if conditions.has("diabetes"):
        windows["diabetes"] = [(0.0, end)]
    return windows


def _outside(busy: list[Window], end: float) -> list[Window]:
    """The parts of [0, end] not covered by `busy` (hypertension is masked by septic shock)."""
    out, t = [], 0.0
    for a, b in sorted(busy):
        if a - t > 1.0:
            out.append((t, a - 0.5))
        t = max(t, b + 0.5)
    if end - t > 1.0:
        out.append((t, end))
    return out


def make_plan(rng: np.random.Generator, index: int) -> PatientPlan:
    """Draw the latent stay of patient `index`."""
    conditions = sample_conditions(rng)
    available = {m: bool(rng.random() < AVAILABILITY[m]) for m in MODALITIES}
    end = float(rng.uniform(*WINDOW_START_HOURS))
    n_images = 0
    if available["image"]:
        n_images = 2 if rng.random() < P_SECOND_IMAGE else 1
    return PatientPlan(
        index=index,
        patient_id=f"P{index:05d}",
        conditions=conditions,
        index_time=_index_time(rng),
        end_hours=round(end, 2),
        available=available,
        planted=_planted_routes(rng, conditions, available),
        windows=_windows(rng, conditions, end),
        n_images=n_images,
    )

