"""Applicability domain: distances checked against scipy, thresholds against their stated false-alarm
rate, shifted inputs flagged, and the checkpoint files round-tripping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from scipy import stats as scipy_stats

from medfuse_core.runtime.domain import (FILM_STATISTICS, UNAVAILABLE, Domain, domain_features, film_statistics,
                                         image_input_statistics)
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
    # v3: the film statistics follow as a second block; the first 3 + 80 columns are as before
    assert joined["image"].shape == (2, 3 + 80 + FILM_STATISTICS) and joined["labs"].shape == (2, 5)
    np.testing.assert_array_equal(joined["image"][:, 3:83], stats)
    np.testing.assert_array_equal(joined["image"][:, 83:], film_statistics(film))


def test_film_statistics_hand_computed() -> None:
    rng = np.random.default_rng(0)
    film = np.zeros((1, 1, 20, 20))
    film[0, 0, 2:18, 2:18] = rng.normal(size=(16, 16))  # a letterboxed film: the zero border is left out
    inside = film[0, 0, 2:18, 2:18].ravel()
    stats = film_statistics(film)[0]
    assert stats[0] == pytest.approx(scipy_stats.skew(inside)) and stats[1] == pytest.approx(scipy_stats.kurtosis(inside))
    assert stats[2:9] == pytest.approx(np.quantile(inside, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]))
    image = film[0, 0]
    assert stats[9] == pytest.approx(np.abs(np.diff(image, axis=1)).mean())
    lap = np.abs(4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2] - image[1:-1, 2:])
    assert stats[13] == pytest.approx(lap.mean()) and stats[15] == pytest.approx(np.quantile(lap, 0.999))
    assert stats[16] == pytest.approx((inside > 2.5).mean()) and stats[18] == pytest.approx((inside < -2.5).mean())
    # a gamma bends the distribution (skewness) even after per-image standardisation
    raw = np.clip(rng.beta(4, 4, size=(64, 64)), 0, 1)
    standard = [(x - x.mean()) / x.std() for x in (raw, raw ** 0.4)]
    skews = film_statistics(np.stack(standard)[:, None])[:, 0]
    assert skews[1] < skews[0] - 0.3


def test_a_second_block_is_scaled_and_the_larger_distance_counts(tmp_path) -> None:
    """The film's two blocks: each a Mahalanobis distance (scipy) divided by its 97th training percentile;
    the score is the larger; a shift seen only by the second block is flagged; the files round-trip."""
    main, second = _gaussian(600, 6, seed=30), _gaussian(600, 3, seed=31)
    train = np.hstack([main, second])
    val = np.hstack([_gaussian(300, 6, seed=32), _gaussian(300, 3, seed=33)])
    domain = fit_modality(train, val, 0.05, further_blocks=3)
    assert len(domain.mean) == 6 and [(b.start, b.stop) for b in domain.blocks] == [(6, 9)]
    first_fit, second_fit = LedoitWolf().fit(main), LedoitWolf().fit(second)

    def by_scipy(x: np.ndarray, fit) -> np.ndarray:
        return np.array([mahalanobis(row, fit.location_, np.linalg.inv(fit.covariance_)) for row in x])

    scale1 = np.quantile(by_scipy(main, first_fit), 0.97)
    scale2 = np.quantile(by_scipy(second, second_fit), 0.97)
    assert domain.scale == pytest.approx(scale1, rel=1e-6) and domain.blocks[0].scale == pytest.approx(scale2, rel=1e-6)
    x = np.hstack([_gaussian(5, 6, seed=34), _gaussian(5, 3, seed=35, shift=4.0)])
    expected = np.maximum(by_scipy(x[:, :6], first_fit) / scale1, by_scipy(x[:, 6:], second_fit) / scale2)
    assert domain.distance(x) == pytest.approx(expected, rel=1e-6)
    assert np.all(domain.distance(x) > domain.threshold)  # shifted in the second block only: still flagged
    assert np.mean(domain.distance(val) > domain.threshold) <= 0.05
    section = Domain({"image": domain}, 0.05).save(tmp_path)
    loaded = Domain.load(tmp_path, section)
    assert loaded is not None and loaded.modalities["image"].distance(x) == pytest.approx(domain.distance(x), rel=1e-6)
    # a v2 section (one block) still loads, and ignores the columns after its own
    single = fit_modality(main, val[:, :6], 0.05)
    old = Domain({"image": single}, 0.05).save(tmp_path)
    old["method"] = "mahalanobis_ledoit_wolf_v2"
    again = Domain.load(tmp_path, old)
    assert again is not None and again.modalities["image"].distance(x) == pytest.approx(single.distance(x[:, :6]), rel=1e-6)
    # each check names the detector that made it: the old checkpoint's is v2, a new fit's v3
    old_check = again.checks({"image": x[:2]}, np.ones((2, 1), dtype=bool), ["image"])[0]
    new_check = loaded.checks({"image": x[:2]}, np.ones((2, 1), dtype=bool), ["image"])[0]
    assert old_check.to_dict()["method"] == "mahalanobis_ledoit_wolf_v2" and again.save(tmp_path)["method"] == old["method"]
    assert new_check.to_dict()["method"] == section["method"] == "mahalanobis_ledoit_wolf_v3"
