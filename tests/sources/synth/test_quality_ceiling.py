"""benchmarks/quality_ceiling.py: the comorbidity posterior is the generator's, and the oracle ranks as claimed."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality_ceiling import age_factor_samples, comorbidity_posterior, oracle_scores
from medfuse_core.sources.synth.diseases import DISEASES, sample_conditions


@pytest.fixture(scope="module")
def population() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    people = [sample_conditions(rng) for _ in range(6000)]
    labels = np.array([[int(p.has(d.key)) for d in DISEASES] for p in people])
    ages = np.array([p.age for p in people])
    return labels, ages


def test_age_factor_samples_reproduce_the_recorded_age() -> None:
    ages = np.array([18.0, 40.0, 64.0, 95.0])
    draws = age_factor_samples(ages, 500, np.random.default_rng(0))
    recorded = np.clip(np.round(64.0 + 15.0 * draws), 18, 95)
    assert (recorded == ages[:, None]).all()


def test_posterior_is_calibrated_against_the_generator(population) -> None:
    """Patients binned by the posterior of a disease have that disease at the binned rate: what makes it
    the true posterior, and not some score. Checked for every disease on 6000 fresh draws."""
    labels, ages = population
    posterior = comorbidity_posterior(labels, ages, draws=1500, seed=1)
    for k, disease in enumerate(DISEASES):
        p, y = posterior[:, k], labels[:, k]
        assert abs(p.mean() - y.mean()) < 0.02, disease.key
        edges = np.quantile(p, [0.0, 0.25, 0.5, 0.75, 1.0])
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (p >= lo) & (p <= hi)
            assert abs(p[inside].mean() - y[inside].mean()) < 0.045, (disease.key, lo, hi)
    # comorbidity is informative: the cardiometabolic diseases raise each other's posterior
    chf, hypertension = 0, 4
    assert posterior[labels[:, chf] == 1, hypertension].mean() > posterior[labels[:, chf] == 0, hypertension].mean() + 0.1


def test_oracle_ranks_detected_positives_first_and_seen_negatives_last() -> None:
    labels = np.array([[1] * 10, [0] * 10, [1] * 10, [0] * 10])
    planted = np.array([[True] * 10, [False] * 10, [False] * 10, [False] * 10])
    unseen = np.array([[False] * 10, [False] * 10, [True] * 10, [True] * 10])
    posterior = np.full((4, 10), 0.3)
    scores = oracle_scores(labels, planted, unseen, posterior)
    assert (scores[0] > scores[2]).all() and (scores[2] >= scores[1]).all()
    single = np.array([d.single_route for d in DISEASES])
    # an unseen single-route disease is ranked by the posterior, an unseen shared-route one by its label
    assert np.allclose(scores[2, single], 0.3) and np.allclose(scores[3, single], 0.3)
    assert (scores[2, ~single] > scores[3, ~single]).all()
