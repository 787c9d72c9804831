"""Applicability domain: distances checked against scipy, thresholds against their stated false-alarm
rate, shifted inputs flagged, and the checkpoint files round-tripping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from medfuse_core.runtime.domain import UNAVAILABLE, Domain, domain_features, image_input_statistics
from medfuse_core.record import MODALITIES
from medfuse_core.train.domain_fit import fit_domain, fit_modality


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)  # correlated features, same for all calls
    return rng.normal(size=(n, d)) @ mixing + shift


def test_distance_is_the_mahalanobis_distance_under_the_shrinkage_covariance() -> None:
    train = _gaussian(300, 8, seed=0)
    domain = fit_modality(train, _gaussian(100, 8, seed=1), 0.05)
    shrunk = LedoitWolf().fit(train)
    x = _gaussian(5, 8, seed=2, shift=1.0)
    expected = [mahalanobis(row, shrunk.location_, np.linalg.inv(shrunk.covariance_)) for row in x]
    assert domain.distance(x) == pytest.approx(expected, rel=1e-8)


def test_threshold_flags_at_most_the_stated_share_of_validation_and_catches_a_shift() -> None:
    train, val = _gaussian(800, 16, seed=3), _gaussian(400, 16, seed=4)
    domain = fit_modality(train, val, 0.05)
    flagged = np.mean(domain.distance(val) > domain.threshold)
    assert flagged <= 0.05 and flagged >= 0.04  # the quantile, not a loose bound
    assert domain.info["val_flagged"] == pytest.approx(flagged)
    fresh = _gaussian(2000, 16, seed=5)  # other in-distribution patients: near the stated rate
    assert np.mean(domain.distance(fresh) > domain.threshold) < 0.08
    assert np.all(domain.distance(_gaussian(200, 16, seed=6, shift=3.0)) > domain.threshold)


def test_checks_per_patient_cover_present_modalities_only(tmp_path) -> None:
    n, d = 200, 6
    rng = np.random.default_rng(7)
    features = {m: _gaussian(n, d, seed=10 + i) for i, m in enumerate(MODALITIES)}
    present = rng.random((n, 4)) < 0.8
    present[:, 3] = True
    domain = fit_domain(features, present, features, present, 0.05)
    assert set(domain.modalities) == set(MODALITIES)
    query = {m: np.vstack([features[m][:1], features[m][:1] + 25.0]) for m in MODALITIES}
    query_present = np.array([[True, False, True, True], [True, True, False, True]])
    first, second = domain.checks(query, query_present, list(MODALITIES))
    assert set(first.distance) == {"labs", "vitals", "image"} and not first.flagged
    assert set(second.distance) == {"labs", "notes", "image"} and sorted(second.flagged) == ["image", "labs", "notes"]
    assert second.to_dict()["out_of_domain"] == ["image", "labs", "notes"]
    assert UNAVAILABLE.to_dict() == {"available": False}

    section = domain.save(tmp_path)
    loaded = Domain.load(tmp_path, section)
    assert loaded is not None
    again = loaded.checks(query, query_present, list(MODALITIES))
    for before, after in zip((first, second), again):
        assert after.distance == pytest.approx(before.distance, rel=1e-6)
    assert [c.flagged for c in again] == [first.flagged, second.flagged]
    assert Domain.load(tmp_path, None) is None  # a checkpoint without a domain has none
    (tmp_path / "domain.safetensors").unlink()
    assert Domain.load(tmp_path, section) is None


def test_a_modality_with_too_few_training_patients_gets_no_domain() -> None:
    features = {m: _gaussian(100, 4, seed=20 + i) for i, m in enumerate(MODALITIES)}
    present = np.ones((100, 4), dtype=bool)
    present[10:, 1] = False  # notes: 10 patients
    domain = fit_domain(features, present, features, present, 0.05)
    assert "notes" not in domain.modalities and "labs" in domain.modalities
    distances = domain.distances(features, present, list(MODALITIES))
    assert np.isnan(distances[:, 1]).all() and np.isfinite(distances[:, 0]).all()


def test_film_input_statistics_hand_computed() -> None:
    film = np.zeros((2, 1, 16, 16))
    film[1, 0, :8, :8] = 3.9  # top-left quarter bright: 25 % of pixels in the last bin, the thumbnail's corner
    stats = image_input_statistics(film)
    assert stats.shape == (2, 16 + 64)
    assert stats[0, 8] == 1.0 and stats[0, :16].sum() == pytest.approx(1.0)  # all pixels at 0: bin [0, 0.5)
    assert stats[1, 15] == pytest.approx(0.25) and stats[1, 8] == pytest.approx(0.75)
    thumbnail = stats[1, 16:].reshape(8, 8)
    assert thumbnail[:4, :4] == pytest.approx(np.full((4, 4), 3.9)) and thumbnail[4:, 4:].max() == 0.0
    joined = domain_features({"image": np.ones((2, 3)), "labs": np.ones((2, 5))}, film)
    assert joined["image"].shape == (2, 3 + 80) and joined["labs"].shape == (2, 5)
