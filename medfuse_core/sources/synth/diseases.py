"""The ten planted diseases, their evidence routes, and how they co-occur in a patient.

Names are the HCUP CCS phenotype names of mimic3-benchmarks (hcup_ccs_2015_definitions.yaml), so a
model trained here uses the same label strings as one trained on MIMIC. The route of a disease is
the ground truth that attribution is scored against: a single-route disease plants evidence in that
one modality only; a shared-route disease plants it in two or more.

Co-morbidity comes from a Gaussian latent-factor model: a cardiometabolic factor (CHF, hypertension,
diabetes, dysrhythmia), an infection factor (sepsis, pneumonia, renal failure, electrolytes) and age.
Each disease's liability has unit variance, so its threshold gives the intended prevalence exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from medfuse_core.sources.synth.realism import CLEAN, Realism

# synth-1.1: hypertension's vitals truth names the mean blood pressure too (charted from the raised SBP
# and DBP, so it carries the same evidence); the generated values are those of synth-1.0
GENERATOR_VERSION = "synth-1.1"
MORTALITY = "In-hospital mortality"
FACTORS = ("cardiometabolic", "infection", "age")


@dataclass(frozen=True)
class Disease:
    """One label: its HCUP name, evidence route, the modalities that carry its evidence, prevalence."""

    key: str  # short id used in code ("chf")
    name: str  # HCUP CCS phenotype name, the label string
    route: str  # "shared" | "labs" | "notes" | "vitals" | "image"
    modalities: tuple[str, ...]  # where evidence is planted (subset of record.MODALITIES)
    evidence: str  # what is planted, for people
    prevalence: float  # marginal probability of the label
    loadings: tuple[float, float, float]  # on FACTORS; sum of squares < 1

    @property
    def single_route(self) -> bool:
        return self.route != "shared"


DISEASES: tuple[Disease, ...] = (
    Disease("chf", "Congestive heart failure; nonhypertensive", "shared", ("labs", "notes", "image"),
            "NT-proBNP up; note mentions heart failure / furosemide; cardiomegaly + vascular congestion",
            0.25, (0.60, 0.0, 0.35)),
    Disease("pneumonia", "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)", "shared",
            ("labs", "notes", "vitals", "image"),
            "WBC up; note productive cough / pneumonia; fever; focal opacity", 0.18, (0.0, 0.65, 0.15)),
    Disease("sepsis", "Septicemia (except in labor)", "shared", ("labs", "notes", "vitals"),
            "lactate and WBC up; HR up, MAP down, fever; note mentions sepsis", 0.15, (0.0, 0.75, 0.10)),
    Disease("diabetes", "Diabetes mellitus without complication", "shared", ("labs", "notes", "vitals"),
            "glucose and HbA1c up; note history + metformin/insulin; fingerstick glucose up", 0.22, (0.55, 0.0, 0.10)),
    Disease("hypertension", "Essential hypertension", "shared", ("notes", "vitals"),
            "systolic BP up; note history + antihypertensive", 0.40, (0.60, 0.0, 0.30)),
    Disease("renal", "Acute and unspecified renal failure", "labs", ("labs",),
            "creatinine rising above range, BUN up", 0.20, (0.25, 0.45, 0.20)),
    Disease("electrolytes", "Fluid and electrolyte disorders", "labs", ("labs",),
            "sodium and/or potassium out of range", 0.25, (0.0, 0.35, 0.15)),
    Disease("copd", "Chronic obstructive pulmonary disease and bronchiectasis", "notes", ("notes",),
            "note history of COPD, inhalers, home oxygen", 0.15, (0.15, 0.0, 0.35)),
    Disease("dysrhythmia", "Cardiac dysrhythmias", "vitals", ("vitals",),
            "fast irregular heart rate episodes", 0.30, (0.35, 0.0, 0.40)),
    Disease("pleural", "Pleurisy; pneumothorax; pulmonary collapse", "image", ("image",),
            "pleural effusion or pneumothorax on the film", 0.10, (0.0, 0.30, 0.10)),
)

DISEASE_BY_KEY: dict[str, Disease] = {d.key: d for d in DISEASES}
DISEASE_NAMES: tuple[str, ...] = tuple(d.name for d in DISEASES)
LABEL_NAMES: tuple[str, ...] = DISEASE_NAMES + (MORTALITY,)

# Severity (drives mortality and the generic acuity signs: GCS, respiratory rate, SpO2, albumin).
# Only shared-route diseases feed it, so that acuity signs never carry a single-route disease.
_SEVERITY_WEIGHTS = {"sepsis": 1.6, "pneumonia": 0.7, "chf": 0.6}


@dataclass(frozen=True)
class Conditions:
    """Who the patient is at the latent level: demographics, diseases, severity, mortality."""

    age: float
    sex: str
    diseases: frozenset[str]  # keys of positive diseases
    severity: float  # 0..1
    died: bool

    def has(self, key: str) -> bool:
        return key in self.diseases

    def labels(self) -> dict[str, int]:
        out = {d.name: int(d.key in self.diseases) for d in DISEASES}
        out[MORTALITY] = int(self.died)
        return out


def _threshold(prevalence: float) -> float:
    return NormalDist().inv_cdf(1.0 - prevalence)


THRESHOLDS = {d.key: _threshold(d.prevalence) for d in DISEASES}  # liability cut-off per disease key


def _loadings(disease: Disease, scale: float) -> np.ndarray:
    """The disease's factor loadings times `scale`, shrunk if needed so that they explain at most 90 %
    of its liability's variance (the rest stays the disease's own noise)."""
    w = np.asarray(disease.loadings) * scale
    explained = float(w @ w)
    return w * np.sqrt(0.9 / explained) if explained > 0.9 else w


def sample_conditions(rng: np.random.Generator, realism: Realism = CLEAN) -> Conditions:
    """Draw demographics and the correlated disease set of one patient (prevalences and comorbidity as
    `realism` sets them; the clean setting is the diseases' own)."""
    factors = rng.standard_normal(3)
    age = float(np.clip(round(64.0 + 15.0 * factors[2]), 18, 95))
    sex = "F" if rng.random() < 0.44 else "M"
    noise = rng.standard_normal(len(DISEASES))
    positive = set()
    for disease, e in zip(DISEASES, noise):
        w = _loadings(disease, realism.loading_scale)
        liability = float(w @ factors) + float(np.sqrt(1.0 - w @ w)) * e
        prevalence = realism.prevalence.get(disease.key)
        threshold = THRESHOLDS[disease.key] if prevalence is None else _threshold(prevalence)
        if liability > threshold:
            positive.add(disease.key)
    acuity = sum(_SEVERITY_WEIGHTS.get(k, 0.0) for k in positive) + 0.35 * factors[2] + 0.6 * rng.standard_normal()
    severity = float(1.0 / (1.0 + np.exp(-(acuity - 1.0))))
    died = bool(rng.random() < 1.0 / (1.0 + np.exp(-(6.0 * severity - 5.2 + realism.mortality_shift))))
    return Conditions(age=age, sex=sex, diseases=frozenset(positive), severity=round(severity, 4), died=died)
