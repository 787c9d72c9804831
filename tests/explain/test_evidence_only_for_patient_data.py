"""Evidence never credits data the patient does not have (issue 16, item 5), and the coverage report
reaches the explain JSON and score's Parquet: on the demo checkpoint and real-shaped bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from medfuse_core.explain.api import explain
from medfuse_core.features.labs import lab_row_reasons
from medfuse_core.features.vitals import DiscretizerConfig, discretize_record
from medfuse_core.predictor import Predictor
from medfuse_core.score import score_cohort
from medfuse_core.sources.bundle import read_bundle
from medfuse_core.sources.vital_channels import CHANNEL_NAMES

ROOT = Path(__file__).resolve().parents[2]
REAL_SHAPE = ROOT / "tests" / "data" / "real_shape"
LABEL = "Diabetes mellitus without complication"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(ROOT / "assets" / "demo_model", device="cpu")


@pytest.mark.parametrize("bundle", ["synthea_patient", "eicu_stay"])
def test_no_evidence_for_channels_or_tests_the_patient_does_not_have(predictor: Predictor, bundle: str) -> None:
    record = read_bundle(REAL_SHAPE / bundle)
    # these real-shaped labs and vitals are unlike the synthetic training data, so by default the applicability
    # domain leaves them out (issue 17); here the question is what evidence is credited when they are read
    predictor.exclude_out_of_domain = False
    try:
        data = explain(record, predictor, labels=[LABEL], n_steps=8, token_steps=4).to_dict()
    finally:
        predictor.exclude_out_of_domain = True
    entry = data["per_label"][LABEL]
    observed = discretize_record(record, DiscretizerConfig()).observed
    had = {CHANNEL_NAMES[c] for c in np.flatnonzero(observed.any(axis=0))}
    assert had and had != set(CHANNEL_NAMES)
    assert {s["channel"] for s in entry["vitals"]} <= had  # no span on a channel never measured
    matrix = np.asarray(entry["vitals_matrix"]["values"])
    never = [i for i, name in enumerate(entry["vitals_matrix"]["channels"]) if name not in had]
    assert np.all(matrix[:, never] == 0)
    first = observed.argmax(axis=0)  # hours before a channel's first measurement hold its normal value
    for c in np.flatnonzero(observed.any(axis=0)):
        assert np.all(matrix[: first[c], c] == 0)
    assert entry["vitals_matrix"]["imputed_attribution"] != 0  # the imputed cells had IG mass: left out
    table = record.labs.table
    vocabulary = predictor.featurizer.vocabulary
    read = table[lab_row_reasons(record.labs, record.index_time, vocabulary) == ""]
    read_keys = {vocabulary.item(i).key for i in vocabulary.ids_of(read["itemid"], read["item"])}
    assert read_keys and {e["key"] for e in entry["labs"]} == read_keys  # tests the patient has, and read

def test_explain_json_and_score_parquet_carry_the_coverage(predictor: Predictor, tmp_path: Path) -> None:
    record = read_bundle(REAL_SHAPE / "eicu_stay")
    predictor.exclude_out_of_domain = False  # the rows' own reasons, with the labs read
    try:
        data = explain(record, predictor, labels=[LABEL], evidence=False).to_dict()
    finally:
        predictor.exclude_out_of_domain = True
    labs = data["coverage"]["modalities"]["labs"]
    assert (labs["given"], labs["read"], labs["not_read"]) == (52, 27, {"unknown test": 16, "outside window": 9})
    # by default the domain check leaves these real-shaped labs out: the 27 results count as not read, with why
    data = explain(record, predictor, labels=[LABEL], evidence=False).to_dict()
    assert data["trust"]["left_out"] == ["labs"]
    labs = data["coverage"]["modalities"]["labs"]
    assert (labs["given"], labs["read"], labs["not_read"]) == (52, 0, {"out of domain": 27, "unknown test": 16,
                                                                      "outside window": 9})
    out = tmp_path / "preds.parquet"
    score_cohort(ROOT / "assets" / "demo_model", REAL_SHAPE, out, progress=False, cache_dir=tmp_path / "cache")
    table = pq.read_table(out).to_pandas().set_index("patient_id")
    assert table.loc["eicu-141765", ["labs_given", "labs_read", "labs_not_read"]].tolist() == [52, 0, 52]
    # the ward demo's labs domain (fitted on a ward's wider lab values) takes this patient's 14 matched labs in;
    # its note is still out of domain
    assert table.loc["7b3c2a1e-synthea", "out_of_domain"] == "notes"
    assert table.loc["7b3c2a1e-synthea", ["labs_read", "vitals_read", "notes_read", "image_given"]].tolist() == [14, 7, 0, 0]
    assert table.loc["eicu-141765", "not_read_reasons"] == "labs: 27 out of domain, 16 unknown test, 9 outside window"
    assert table.loc["7b3c2a1e-synthea", "not_read_reasons"] == "labs: 12 unknown test; notes: 1 out of domain"
