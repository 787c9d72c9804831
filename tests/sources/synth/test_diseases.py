"""The disease table: HCUP names, routes, prevalence and co-morbidity correlations."""

from __future__ import annotations

import numpy as np
import pytest

from medfuse_core.record import MODALITIES
from medfuse_core.sources.synth.diseases import DISEASES, LABEL_NAMES, MORTALITY, sample_conditions


def test_names_are_hcup_benchmark_phenotypes(shared_data):
    text = (shared_data / "mimic3-benchmarks" / "hcup_ccs_2015_definitions.yaml").read_text()
    for disease in DISEASES:
        head = f'"{disease.name}":\n  use_in_benchmark: True'
        assert head in text, disease.name
    assert len({d.name for d in DISEASES}) == 10
    assert LABEL_NAMES[-1] == MORTALITY == "In-hospital mortality"


def test_routes_match_design_table():
    routes = {d.key: d.route for d in DISEASES}
    assert routes == {"chf": "shared", "pneumonia": "shared", "sepsis": "shared", "diabetes": "shared",
                      "hypertension": "shared", "renal": "labs", "electrolytes": "labs", "copd": "notes",
                      "dysrhythmia": "vitals", "pleural": "image"}
    for d in DISEASES:
        assert set(d.modalities) <= set(MODALITIES)
        if d.single_route:
            assert d.modalities == (d.route,)
        else:
            assert len(d.modalities) >= 2
        assert sum(w * w for w in d.loadings) < 1


@pytest.fixture(scope="module")
def conditions():
    rng = np.random.default_rng(5)
    return [sample_conditions(rng) for _ in range(6000)]


def test_marginal_prevalence_matches_table(conditions):
    for d in DISEASES:
        rate = np.mean([c.has(d.key) for c in conditions])
        assert abs(rate - d.prevalence) < 0.025, (d.key, rate)
    mortality = np.mean([c.died for c in conditions])
    assert 0.04 < mortality < 0.25


def _phi(conditions, a: str, b: str) -> float:
    x = np.array([c.has(a) for c in conditions], dtype=float)
    y = np.array([c.has(b) for c in conditions], dtype=float)
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.parametrize("a,b", [("chf", "hypertension"), ("hypertension", "diabetes"), ("chf", "diabetes"),
                                 ("sepsis", "pneumonia"), ("sepsis", "renal"), ("pneumonia", "renal")])
def test_comorbidities_are_correlated(conditions, a, b):
    assert _phi(conditions, a, b) > 0.08


def test_unrelated_diseases_are_not(conditions):
    assert abs(_phi(conditions, "diabetes", "sepsis")) < 0.06


def test_mortality_follows_severity(conditions):
    sev = np.array([c.severity for c in conditions])
    died = np.array([c.died for c in conditions])
    assert sev[died].mean() > sev[~died].mean() + 0.15
