"""The per-patient coverage report: what the model read and what not, with the reason; never at odds
with what the features really read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from medfuse_core.features.coverage import coverage
from medfuse_core.features.labs import LabVocabulary, lab_features, lab_row_reasons
from medfuse_core.features.vitals import DiscretizerConfig, discretize, vitals_row_reasons
from medfuse_core.record import Labs, Vitals
from medfuse_core.sources.bundle import read_bundle

REPO = Path(__file__).resolve().parents[2]
REAL_SHAPE = REPO / "tests" / "data" / "real_shape"
BAD = REPO / "tests" / "data" / "bad"


def vocabulary() -> LabVocabulary:
    config = json.loads((REPO / "assets" / "demo_model" / "config.json").read_text())
    return LabVocabulary.from_dict(config["features"]["lab_vocabulary"])


def test_eicu_stay_coverage_names_every_unread_result() -> None:
    cov = coverage(read_bundle(REAL_SHAPE / "eicu_stay"), vocabulary())
    labs = cov.modalities["labs"]
    assert (labs.given, labs.read) == (52, 27)
    assert labs.not_read == {"unknown test": 16, "outside window": 9}
    assert labs.summary() == "25 of 52 lab results not used: 16 unknown tests, 9 outside the 48 h window"
    assert {d["what"].split(" ")[0] for d in labs.details if d["reason"] == "unknown test"} >= {"bedside", "MCV", "paO2"}
    assert cov.modalities["vitals"].summary() == "all 10 vital-sign values used"
    assert cov.counts()["labs_not_read"] == 25


def test_unit_plausibility_and_duplicate_reasons_reach_the_report() -> None:
    for case, expected in [("labs_incompatible_unit", {"unit incompatible": 2, "unit unknown": 1, "unit missing": 1}),
                           ("labs_implausible_values", {"implausible": 5}),
                           ("labs_duplicate_rows", {"duplicate": 2})]:
        labs = coverage(read_bundle(BAD / case), vocabulary()).modalities["labs"]
        assert labs.not_read == expected, case
    vitals = coverage(read_bundle(BAD / "vitals_outlier"), vocabulary()).modalities["vitals"]
    assert (vitals.given, vitals.read, vitals.not_read) == (2, 1, {"implausible": 1})


def test_unreadable_files_are_counted() -> None:
    image = coverage(read_bundle(BAD / "image_random_bytes"), vocabulary()).modalities["image"]
    assert (image.given, image.read, image.not_read) == (1, 0, {"unreadable file": 1})
    assert image.summary() == "1 of 1 film not used: 1 unreadable file"


def test_read_lab_rows_are_exactly_the_rows_the_features_use() -> None:
    rng = np.random.default_rng(0)
    vocab = vocabulary()
    names = ["Creatinine", "Glucose", "Sodium", "Troponin T", "BUN"]
    rows = [{"time": pd.Timestamp("2131-05-07 08:00") + pd.Timedelta(hours=float(h)), "item": names[i],
             "value": float(v), "value_text": f"{v:.1f}", "unit": "mg/dL", "not_used": "" if rng.random() > 0.2 else "implausible"}
            for i, h, v in zip(rng.integers(0, 5, 200), rng.uniform(-10, 60, 200), rng.uniform(1, 200, 200))]
    labs = Labs(pd.DataFrame(rows))
    labs.table.loc[labs.table["not_used"] != "", "value"] = np.nan
    index_time = pd.Timestamp("2131-05-07 08:00")
    reasons = lab_row_reasons(labs, index_time, vocab)
    read = labs.table[reasons == ""]
    tokens = lab_features(labs, index_time, vocab)
    expected = lab_features(Labs(read.reset_index(drop=True)), index_time, vocab)
    np.testing.assert_array_equal(tokens.item_ids, expected.item_ids)
    np.testing.assert_allclose(tokens.values, expected.values)
    assert set(reasons) == {"", "implausible", "unknown test", "outside window"}


def test_read_vitals_rows_are_exactly_the_cells_the_discretizer_fills() -> None:
    rng = np.random.default_rng(1)
    channels = ["Heart Rate", "Respiratory rate", "Pain score", "Temperature"]
    t0 = pd.Timestamp("2131-05-07 08:00")
    table = pd.DataFrame({"time": [t0 + pd.Timedelta(hours=float(h)) for h in rng.uniform(-5, 55, 300)],
                          "channel": [channels[i] for i in rng.integers(0, 4, 300)],
                          "value": rng.uniform(30, 120, 300)})
    table["value_text"] = table["value"].map(lambda v: f"{v:.1f}")
    table.loc[table["channel"] == "Temperature", "value"] = 37.0
    vitals = Vitals(table)
    config = DiscretizerConfig()
    reasons = vitals_row_reasons(vitals, t0, config)
    read = Vitals(vitals.table[reasons == ""].reset_index(drop=True))
    full, only_read = discretize(vitals, t0, config), discretize(read, t0, config)
    np.testing.assert_array_equal(full.values, only_read.values)
    assert (reasons == "superseded in its hour").sum() > 0 and (reasons == "unknown item").sum() > 0


def test_validate_prints_a_coverage_line_per_patient_and_details_with_v() -> None:
    out = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(REAL_SHAPE), "-v"],
                         capture_output=True, text=True, timeout=120, cwd=REPO).stdout
    lines = out.splitlines()
    assert "coverage: eicu-141765: read labs 27/52, notes 0/0, vitals 10/10, image 0/0 (25 not used)" in lines
    assert "  labs: 25 of 52 lab results not used: 16 unknown tests, 9 outside the 48 h window" in lines
    assert "    labs: bedside glucose 171 mg/dL at 2014-03-02 13:00:00: unknown test" in lines
    short = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(REAL_SHAPE)],
                           capture_output=True, text=True, timeout=120, cwd=REPO).stdout
    assert sum(line.startswith("coverage: ") for line in short.splitlines()) == 2 and "    labs:" not in short


def test_a_modality_left_out_by_the_domain_check_is_not_read() -> None:
    cov = coverage(read_bundle(REAL_SHAPE / "eicu_stay"), vocabulary())
    left = cov.leaving_out(["labs"])
    labs = left.modalities["labs"]
    assert (labs.given, labs.read) == (52, 0)
    assert labs.not_read == {"out of domain": 27, "unknown test": 16, "outside window": 9}
    assert labs.summary().startswith("52 of 52 lab results not used: 27 left out as unlike the training data, ")
    assert left.modalities["vitals"] == cov.modalities["vitals"] and cov.modalities["labs"].read == 27  # a copy
    assert left.counts()["labs_read"] == 0 and cov.leaving_out([]) == cov
