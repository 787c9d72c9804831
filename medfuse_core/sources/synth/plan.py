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
from medfuse_core.sources.synth.diseases import DISEASE_BY_KEY, DISEASES, Conditions, sample_conditions
from medfuse_core.sources.synth.realism import CLEAN, Deviations, Realism, draw_deviations

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
    realism: str = CLEAN.name  # the generator's realism setting (realism.py)
    deviations: Deviations = field(default_factory=Deviations)  # what that setting drew for this patient

    def plants(self, disease: str, modality: str) -> bool:
        """Evidence of `disease` goes into `modality`: a positive's route, or a mimic's."""
        return modality in self.planted.get(disease, ())

    def strength(self, disease: str) -> float:
        """How strongly the planted evidence of `disease` shows: 1 full, less for a weak positive or a mimic.
        Generators move a value from its typical level `strength` of the way to the planted one."""
        if disease in self.deviations.mimics:
            return self.deviations.mimics[disease]
        return self.deviations.strength.get(disease, 1.0)

    def labels(self) -> dict[str, int]:
        """The coded labels: the conditions, less those left uncoded, plus those coded without one."""
        labels = self.conditions.labels()
        for key in self.deviations.uncoded:
            labels[DISEASE_BY_KEY[key].name] = 0
        for key in self.deviations.overcoded:
            labels[DISEASE_BY_KEY[key].name] = 1
        return labels

    def window(self, disease: str) -> list[Window]:
        return self.windows.get(disease, [])


def _index_time(rng: np.random.Generator) -> pd.Timestamp:
    """A MIMIC-style shifted admission time (years 2100-2200), to the minute."""
    day = pd.Timestamp("2100-01-01") + pd.Timedelta(days=int(rng.integers(0, 365 * 100)))
    return day + pd.Timedelta(minutes=int(rng.integers(0, 24 * 60)))


def _planted_routes(rng: np.random.Generator, conditions: Conditions, available: dict[str, bool],
                    deviations: Deviations, realism_rng: np.random.Generator | None) -> dict[str, tuple[str, ...]]:
    planted: dict[str, tuple[str, ...]] = {}
    for disease in DISEASES:
        if not conditions.has(disease.key):
            continue
        routes = [m for m in disease.modalities if available[m]]
        if not disease.single_route and len(routes) >= 2 and rng.random() < P_INCOMPLETE:
            routes.pop(int(rng.integers(len(routes))))
        if deviations.strength.get(disease.key, 1.0) == 0.0:
            routes = []  # its evidence lies outside the window: a positive with nothing to see
        planted[disease.key] = tuple(routes)
    for key in deviations.mimics:  # weak evidence of a disease the patient does not have, in one of its routes
        routes = [m for m in DISEASE_BY_KEY[key].modalities if available[m]]
        if routes and realism_rng is not None:
            planted[key] = (routes[int(realism_rng.integers(len(routes)))],)
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


def _windows(rng: np.random.Generator, conditions: Conditions, end: float,
             mimics: frozenset[str] = frozenset()) -> dict[str, list[Window]]:
    """When each disease's evidence shows; mimicked diseases get windows drawn the same way."""
    windows: dict[str, list[Window]] = {}
    active = conditions.diseases | mimics
    if "sepsis" in active:
        onset = float(rng.uniform(0.0, 8.0))
        windows["sepsis"] = [(onset, min(end, onset + float(rng.uniform(14.0, 30.0))))]
    if "pneumonia" in active:
        onset = float(rng.uniform(0.0, 10.0))
        windows["pneumonia"] = [(onset, min(end, onset + float(rng.uniform(16.0, 40.0))))]
    if "dysrhythmia" in active:
        windows["dysrhythmia"] = _episodes(rng, end)
    if "renal" in active:
        # creatinine starts rising at onset (before admission for half the patients)
        onset = float(rng.uniform(-12.0, 0.0)) if rng.random() < 0.5 else float(rng.uniform(0.0, 16.0))
        windows["renal"] = [(onset, end)]
    if "electrolytes" in active:
        windows["electrolytes"] = [(0.0, min(end, float(rng.uniform(20.0, end + 10.0))))]
    if "hypertension" in active:
        windows["hypertension"] = _outside(windows.get("sepsis", []), end)
    if "diabetes" in active:
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


def make_plan(rng: np.random.Generator, index: int, realism: Realism = CLEAN,
              realism_rng: np.random.Generator | None = None) -> PatientPlan:
    """Draw the latent stay of patient `index`. The realism setting's own draws come from
    `realism_rng`, so the clean setting draws exactly what it drew before realism existed."""
    conditions = sample_conditions(rng, realism)
    deviations = Deviations()
    if not realism.clean:
        if realism_rng is None:
            raise ValueError(f"realism {realism.name!r} needs its own random stream (realism_rng)")
        deviations = draw_deviations(realism_rng, realism, conditions.diseases, tuple(d.key for d in DISEASES))
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
        planted=_planted_routes(rng, conditions, available, deviations, realism_rng),
        windows=_windows(rng, conditions, end, frozenset(deviations.mimics)),
        n_images=n_images,
        realism=realism.name,
        deviations=deviations,
    )

