"""The synthetic cohort: patient bundles with planted, recorded evidence (truth.json).

Ten HCUP phenotypes with a known evidence route each (see `diseases.DISEASES`) plus in-hospital
mortality, in a clean textbook world or a MIMIC-like ward (`realism.py`); `generate_cohort` writes
bundles, `synthesize` / `generate_patient` work in memory.
"""

from medfuse_core.sources.synth.cohort import (
    COHORT_FILE,
    CohortSummary,
    SynthPatient,
    generate_cohort,
    generate_patient,
    synthesize,
    write_patient,
)
from medfuse_core.sources.synth.diseases import (
    DISEASE_NAMES,
    DISEASES,
    GENERATOR_VERSION,
    LABEL_NAMES,
    MORTALITY,
    Disease,
)
from medfuse_core.sources.synth.realism import CLEAN, SETTINGS, WARD, Realism, realism_named

__all__ = [
    "COHORT_FILE", "CohortSummary", "DISEASES", "DISEASE_NAMES", "Disease", "GENERATOR_VERSION",
    "LABEL_NAMES", "MORTALITY", "SynthPatient", "generate_cohort", "generate_patient", "synthesize",
    "write_patient", "CLEAN", "WARD", "SETTINGS", "Realism", "realism_named",
]
