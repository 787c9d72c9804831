"""The Predictor's trust path on a real (tiny) checkpoint: an out-of-domain modality is left out exactly
as if it were missing, a patient left with nothing gets "insufficient data", and intervals and states
sit beside every probability."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from medfuse_core.demo import demo_cohort_dir
from medfuse_core.runtime.domain import Domain
from medfuse_core.predictor import NoData, Prediction, Predictor
from medfuse_core.record import MODALITIES
from medfuse_core.sources.bundle import find_bundles, read_bundle
from medfuse_core.train.conformal_fit import fit_checkpoint_intervals
from medfuse_core.train.domain_fit import encoder_outputs, fit_domain
from medfuse_core.runtime.trust import OUT_OF_DOMAIN, UNCERTAIN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(demo_checkpoint: Path):
    predictor = Predictor.load(demo_checkpoint, device="cpu")
    records = [read_bundle(f) for f in find_bundles(demo_cohort_dir())]
    features, _ = predictor.featurize(records)
    outputs, present = encoder_outputs(predictor.model, features)
    domain = fit_domain(outputs, present, outputs, present, 0.05)
    intervals = fit_checkpoint_intervals(predictor.model, predictor.calibration, features)
    return predictor, records, domain, intervals


def test_an_out_of_domain_film_is_left_out_as_if_it_were_missing(setup) -> None:
    predictor, records, domain, intervals = setup
    image = MODALITIES.index("image")
    # the film flagged for everyone, nothing else for anyone (a 5 % in-sample fit flags a few labs too)
    domain = dataclasses.replace(domain, modalities={
        m: dataclasses.replace(d, threshold=-1.0 if m == "image" else float("inf")) for m, d in domain.modalities.items()})
    checked = Predictor(predictor.model, predictor.featurizer, predictor.config, domain=domain)
    checked.intervals = intervals
    with_film = [r for r in records if r.images and len(r.present_modalities) > 1][:3]
    assert with_film
    results = checked.predict(with_film)
    without = Predictor(predictor.model, predictor.featurizer, predictor.config).predict(
        [dataclasses.replace(r, images=[]) for r in with_film])
    for result, reference in zip(results, without):
        assert isinstance(result, Prediction) and not result.present[image]
        assert result.trust.left_out == ["image"] and result.trust.status == OUT_OF_DOMAIN
        assert "chest film did not look like the data the model was trained on" in result.trust.reason
        np.testing.assert_allclose(result.logits, reference.logits, rtol=1e-5, atol=1e-5)
        as_dict = result.to_dict()
        assert "image" not in as_dict["modalities_used"] and as_dict["trust"]["left_out"] == ["image"]
        for entry in as_dict["labels"].values():
            low, high = entry["interval"]["low"], entry["interval"]["high"]
            assert 0 <= low <= entry["probability"] <= high <= 1
            assert (entry["state"] == UNCERTAIN) == (low < entry["threshold"] <= high)
    # kept in: with exclusion off, the same film is flagged but used
    checked.exclude_out_of_domain = False
    kept = checked.predict(with_film[:1])[0]
    assert kept.present[image] and kept.trust.domain.flagged == ["image"] and kept.trust.left_out == []


def test_a_patient_whose_every_modality_is_out_of_domain_gets_insufficient_data(setup) -> None:
    predictor, records, domain, _ = setup
    nothing_fits = dataclasses.replace(domain, modalities={m: dataclasses.replace(d, threshold=-1.0)
                                                           for m, d in domain.modalities.items()})
    checked = Predictor(predictor.model, predictor.featurizer, predictor.config, domain=nothing_fits)
    result = checked.predict(records[:1])[0]
    assert isinstance(result, NoData) and result.reason.startswith("insufficient data:")
    assert result.to_dict()["state"] == "insufficient data" and result.to_dict()["domain"]["out_of_domain"]


def test_without_a_fitted_domain_nothing_is_claimed(setup) -> None:
    predictor, records, _, _ = setup
    result = predictor.predict(records[:1])[0]
    assert isinstance(result, Prediction)
    assert result.to_dict()["trust"]["domain"] == {"available": False}
    assert predictor.domain is None  # the tiny checkpoint was trained without a domain fit


def test_coverage_never_says_read_for_a_modality_the_domain_check_left_out(setup) -> None:
    """The explain JSON's coverage: the film left out as out of domain counts as not read, with that reason."""
    from medfuse_core.explain import explain

    predictor, records, domain, _ = setup
    domain = dataclasses.replace(domain, modalities={**domain.modalities,
                                                     "image": dataclasses.replace(domain.modalities["image"], threshold=-1.0)})
    checked = Predictor(predictor.model, predictor.featurizer, predictor.config, domain=domain)
    record = next(r for r in records if r.images and r.labs.table.shape[0])
    data = explain(record, checked, labels=[checked.labels[0]], evidence=False).to_dict()
    image, labs = data["coverage"]["modalities"]["image"], data["coverage"]["modalities"]["labs"]
    assert image["read"] == 0 and image["not_read"]["out of domain"] == 1
    assert image["details"][0] == {"what": "1 film", "time": "", "reason": "out of domain"}
    assert labs["read"] > 0 and "out of domain" not in labs["not_read"]


def test_calibrate_with_intervals_data_alone_refits_only_the_intervals(setup, demo_checkpoint: Path, tmp_path) -> None:
    """`calibrate --checkpoint X --intervals-data V`: conformal.safetensors written, the calibration untouched,
    and the loaded checkpoint's intervals are those fitted on V in memory; --domain without --data is refused."""
    import json
    import shutil

    from medfuse_core.cli import main
    from medfuse_core.runtime.uncertainty import CONFORMAL_FILE

    predictor, _, _, intervals = setup
    folder = tmp_path / "checkpoint"
    shutil.copytree(demo_checkpoint, folder)
    before = json.loads((folder / "config.json").read_text())
    assert main(["calibrate", "--checkpoint", str(folder), "--intervals-data", str(demo_cohort_dir()), "--quiet"]) == 0
    after = json.loads((folder / "config.json").read_text())
    assert (folder / CONFORMAL_FILE).is_file() and after["calibration"] == before["calibration"]
    assert after["uncertainty"]["fitted_on"]["command"].endswith("--intervals-data VALIDATION_COHORT")
    loaded = Predictor.load(folder, device="cpu").intervals
    assert loaded is not None
    np.testing.assert_allclose(loaded.up, intervals.up, atol=1e-6)
    np.testing.assert_allclose(loaded.down, intervals.down, atol=1e-6)
    np.testing.assert_array_equal(loaded.calibration_rows, intervals.calibration_rows)
    assert main(["calibrate", "--checkpoint", str(folder), "--domain", "--intervals-data", str(demo_cohort_dir())]) == 2
