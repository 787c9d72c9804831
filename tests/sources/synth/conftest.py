"""Fixtures of the synthetic-cohort tests: one in-memory cohort shared by the module tests."""

from __future__ import annotations

import pytest

from medfuse_core.sources.synth import SynthPatient, synthesize

COHORT_SEED = 20260
COHORT_SIZE = 200
IMAGE_SIZE = 128  # small films keep the 200-patient fixture to a few seconds


@pytest.fixture(scope="session")
def cohort() -> list[SynthPatient]:
    """200 patients generated in memory (records, truth and masks)."""
    return [synthesize(COHORT_SEED, i, image_size=IMAGE_SIZE) for i in range(COHORT_SIZE)]
