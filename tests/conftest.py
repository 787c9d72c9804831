"""Shared fixtures: the real reference data beside the repo, and a tiny synthetic cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights never come from a hub, in tests least of all

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`: real MIMIC-III demo tables and mimic3-benchmarks resources."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing: CI must run with ../shared beside the repository")
        pytest.skip(f"{SHARED_DATA} not present beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-patient synthetic cohort on disk (small images), shared by the tests of a session."""
    from medfuse_core.sources.synth import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(12, seed=11, out_dir=out, image_size=128)
    return out


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the demo cohort the tests generate out of the user's ~/.cache."""
    os.environ["MEDFUSE_LENS_HOME"] = str(tmp_path_factory.mktemp("medfuse_home"))


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory):
    """32 synthetic patients (seed 21) featurized with the real text model; (featurizer, features, records)."""
    from medfuse_core.features.featurize import Featurizer
    from medfuse_core.sources.synth import LABEL_NAMES, generate_patient

    records = [generate_patient(21, i, image_size=64) for i in range(32)]
    cache = tmp_path_factory.mktemp("embeddings")
    featurizer = Featurizer.fit(records, LABEL_NAMES, image_size=32, cache_dir=Path(cache))
    features, evidence = featurizer.featurize_many(records, progress=False)
    return featurizer, features, records, evidence
