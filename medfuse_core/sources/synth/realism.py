"""How much the synthetic world looks like a ward: "clean" (the textbook) or "ward" (MIMIC-like).

The clean cohort plants every positive's evidence at full strength and codes every label right, so a
model reaches macro-AUROC ~0.98 and sits at 0 % or 100 %: right for the faithfulness benchmark (the
planted routes are unambiguous), wrong for a demo a clinician triages. The ward setting keeps the
same patients, modalities and renderers and changes only what a real ward changes:

- prevalences near MIMIC's (`WARD_PREVALENCE`, measured on the real demo tables, see below);
- stronger comorbidity (the latent-factor loadings scaled up), so diseases travel together;
- positives whose evidence is absent from the 48 h window (diagnosed before, coded from history),
  and positives whose evidence is weak (milder values, a single mention in the notes, a faint
  finding on the film, a shorter episode);
- mimics: patients without the disease who show weak evidence of it (a fever from a line, a raised
  white count on steroids), which blurs the routes between diseases;
- label noise as ICD coding has it: a share of true conditions not coded, a few coded without being
  present.

What was done to each patient is written to truth.json (`realism`, `evidence_strength`, `mimics`,
`label_noise`), so a benchmark can still score against what the data really holds. The clean setting
draws nothing extra: clean cohorts are byte-identical to those of before this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Prevalence per disease key, pooled over the 404 admissions of the MIMIC-III demo (129) and the
# MIMIC-IV demo (275) as `import mimic3` / `import mimic4` label them (HCUP CCS phenotypes of
# mimic3-benchmarks); rounded to 0.01. tests/test_synth_realism.py recomputes them from the tables.
WARD_PREVALENCE = {
    "chf": 0.25, "pneumonia": 0.15, "sepsis": 0.18, "diabetes": 0.24, "hypertension": 0.38,
    "renal": 0.30, "electrolytes": 0.36, "copd": 0.14, "dysrhythmia": 0.38, "pleural": 0.09,
}
WARD_MORTALITY = 0.14  # in-hospital mortality, same 404 admissions


@dataclass(frozen=True)
class Realism:
    """One setting of the generator; `CLEAN` changes nothing, `WARD` is the demo's."""

    name: str
    prevalence: dict[str, float] = field(default_factory=dict)  # disease key -> prevalence; empty: the disease's own
    mortality_shift: float = 0.0  # added to the mortality logit (sets the ward's mortality rate)
    loading_scale: float = 1.0  # comorbidity: latent-factor loadings multiplied by this (capped below 1 in norm)
    p_absent: float = 0.0  # a positive whose evidence is not in the window at all
    p_weak: float = 0.0  # a positive whose evidence is weak
    weak_strength: tuple[float, float] = (1.0, 1.0)  # uniform range of a weak positive's strength (1 = full)
    p_mimic: float = 0.0  # per disease, a patient without it who shows weak evidence of it
    p_uncoded: float = 0.0  # a true condition left out of the coded labels
    p_overcoded: float = 0.0  # a coded label without the condition

    @property
    def clean(self) -> bool:
        return self.name == "clean"

    def to_dict(self) -> dict:
        return {"name": self.name, "p_absent": self.p_absent, "p_weak": self.p_weak,
                "weak_strength": list(self.weak_strength), "p_mimic": self.p_mimic,
                "p_uncoded": self.p_uncoded, "p_overcoded": self.p_overcoded,
                "loading_scale": self.loading_scale}


CLEAN = Realism("clean")
WARD = Realism(
    "ward",
    prevalence=WARD_PREVALENCE,
    mortality_shift=0.4,  # brings the ward's mortality to about WARD_MORTALITY (tested)
    loading_scale=1.25,
    p_absent=0.2,
    p_weak=0.3,
    weak_strength=(0.3, 0.6),
    p_mimic=0.05,
    p_uncoded=0.08,
    p_overcoded=0.02,
)
SETTINGS = {r.name: r for r in (CLEAN, WARD)}


def realism_named(name: str) -> Realism:
    """The setting called `name`; a clear error naming the choices otherwise."""
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"realism: expected one of {', '.join(SETTINGS)}; got {name!r}") from None


def toward(typical, planted, strength: float):
    """The planted value(s), or for weak evidence (strength < 1) only that share of the way from the typical
    one; strength 1 returns `planted` itself, so the clean setting's values are bit for bit those of before."""
    return planted if strength == 1.0 else typical + strength * (planted - typical)


@dataclass(frozen=True)
class Deviations:
    """What the ward setting drew for one patient (all empty for the clean setting)."""

    strength: dict[str, float] = field(default_factory=dict)  # disease key -> 0 (absent) .. 1 (full)
    mimics: dict[str, float] = field(default_factory=dict)  # disease key -> strength of the mimicked evidence
    uncoded: frozenset[str] = frozenset()  # true conditions not coded
    overcoded: frozenset[str] = frozenset()  # coded without the condition


def draw_deviations(rng: np.random.Generator, realism: Realism, diseases: frozenset[str],
                    keys: tuple[str, ...]) -> Deviations:
    """The ward's per-patient draws, from their own stream so the clean draws never move."""
    if realism.clean:
        return Deviations()
    strength: dict[str, float] = {}
    mimics: dict[str, float] = {}
    uncoded, overcoded = set(), set()
    low, high = realism.weak_strength
    for key in keys:
        u, s, m, c = rng.random(4)
        if key in diseases:
            if u < realism.p_absent:
                strength[key] = 0.0
            elif u < realism.p_absent + realism.p_weak:
                strength[key] = round(float(low + (high - low) * s), 3)
            if c < realism.p_uncoded:
                uncoded.add(key)
        else:
            if m < realism.p_mimic:
                mimics[key] = round(float(low + (high - low) * s), 3)
            if c < realism.p_overcoded:
                overcoded.add(key)
    return Deviations(strength, mimics, frozenset(uncoded), frozenset(overcoded))
