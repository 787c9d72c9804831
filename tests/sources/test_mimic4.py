"""The MIMIC-IV reader on the tiny fixture tree of fixtures_mimic4.py: exact counts and values."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfuse_core.cli import main
from medfuse_core.problems import DataError, Severity
from medfuse_core.sources.bundle import read_bundle
from medfuse_core.sources.duck import find_table_files
from medfuse_core.sources.importer import import_mimic4
from medfuse_core.sources.mimic4 import Mimic4Reader, variable_map
from medfuse_core.sources.vital_channels import CHANNEL_NAMES
from tests.sources.fixtures_mimic4 import (
    CXR_INSIDE,
    CXR_MISSING,
    DISCHARGE_H1,
    H1,
    H2,
    H3,
    H4,
    RADIOLOGY_H1,
    STAY1,
    STAY2,
    STAY3,
    image_pixels,
    write_mimic4_tree,
)

MORTALITY = "In-hospital mortality"
CHF = "Congestive heart failure; nonhypertensive"
RENAL = "Acute and unspecified renal failure"
DYSRHYTHMIA = "Cardiac dysrhythmias"
SEPSIS = "Septicemia (except in labor)"
HYPERTENSION = "Essential hypertension"
DIABETES = "Diabetes mellitus without complication"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mimic4_tree(tmp_path_factory.mktemp("mimic4") / "mimic-iv")


@pytest.fixture(scope="module")
def admissions(tree: Path):
    reader = Mimic4Reader(tree)
    return reader, {r.patient_id: r for r in reader}


@pytest.fixture(scope="module")
def stays(tree: Path):
    reader = Mimic4Reader(tree, unit="icustay", chunk_rows=2)  # tiny chunks: records cut across batches
    return reader, {r.patient_id: r for r in reader}


def positives(record) -> set[str]:
    return {name for name, value in (record.labels or {}).items() if value}


# -------------------------------------------------------------------------------------- the map


def test_vitals_map_is_ours_and_on_the_benchmark_channels() -> None:
    table = variable_map()
    assert set(table["variable"]) <= set(CHANNEL_NAMES)
    assert table["source"].str.contains("ours").all()
    assert table["itemid"].is_unique
    by_id = dict(zip(table["itemid"], table["variable"]))
    assert by_id["220045"] == "Heart Rate" and by_id["223762"] == "Temperature" and by_id["223951"] == "Capillary refill rate"
    assert {"220179", "220050"} == set(table["itemid"][table["variable"] == "Systolic blood pressure"])


def test_tables_found_in_subfolders_ignoring_case(tmp_path: Path) -> None:
    (tmp_path / "hosp").mkdir()
    (tmp_path / "hosp" / "ADMISSIONS.csv.gz").write_bytes(b"")
    (tmp_path / "LabEvents.parquet").write_bytes(b"")
    (tmp_path / "hosp" / "labevents.csv").write_bytes(b"")
    found, duplicates = find_table_files(tmp_path)
    assert found["admissions"].name == "ADMISSIONS.csv.gz"
    assert found["labevents"].name == "LabEvents.parquet"  # shallower wins
    assert [(n, p.name) for n, _, p in duplicates] == [("labevents", "labevents.csv")]


# ------------------------------------------------------------------------------------ admissions


def test_admission_records_in_subject_and_time_order(admissions) -> None:
    reader, records = admissions
    assert reader.ids == [f"H{H1}", f"H{H2}", f"H{H3}", f"H{H4}"]
    assert len(reader) == 4
    r = records[f"H{H1}"]
    assert (r.age, r.sex, r.index_time) == (52.0, "F", pd.Timestamp("2180-05-06 22:23:00"))
    assert records[f"H{H3}"].age == 72.0 and records[f"H{H3}"].sex == "M"


def test_age_over_89_set_to_90_with_warning(admissions) -> None:
    record = admissions[1][f"H{H4}"]
    assert record.age == 90.0
    assert any(p.field == "anchor_age" for p in record.problems)


def test_labs_with_text_values_names_and_limits(admissions) -> None:
    reader, records = admissions
    labs = records[f"H{H1}"].labs.table
    assert list(labs["item"]) == ["Creatinine", "Glucose", "Urea Nitrogen"]  # labevent_id order at one time
    bun = labs[labs["itemid"] == 51006].iloc[0]
    assert (bun["value_text"], bun["value"], bun["censored"], bun["ref_low"], bun["ref_high"]) == ("<5", 5.0, "below",
                                                                                                   6.0, 20.0)
    creatinine = labs[labs["itemid"] == 50912].iloc[0]
    assert (creatinine["value"], creatinine["unit"], creatinine["flag"]) == (1.2, "mg/dL", "abnormal")
    potassium = records[f"H{H2}"].labs.table.iloc[0]
    assert (potassium["item"], potassium["value"], potassium["value_text"]) == ("Potassium", 4.1, "4.1")  # from valuenum
    hemolyzed = records[f"H{H3}"].labs.table
    assert hemolyzed["value_text"].tolist() == ["1.3", "7.31", "HEMOLYZED"]
    assert np.isnan(hemolyzed["value"].iloc[2])
    s = reader.stats
    assert (s.lab_rows, s.lab_rows_without_stay, s.lab_rows_unplaced, s.lab_rows_placed) == (10, 1, 1, 8)


def test_vitals_on_benchmark_channels(admissions) -> None:
    reader, records = admissions
    vitals = records[f"H{H1}"].vitals.table
    usable = vitals[vitals["not_used"] == ""]
    got = {(c, v) for c, v in zip(usable["channel"], usable["value"])}
    assert got == {("Heart Rate", 88.0), ("Heart Rate", 92.0), ("Systolic blood pressure", 120.0),
                   ("Temperature", 37.0), ("Glascow coma scale eye opening", 4.0), ("Capillary refill rate", 0.0),
                   ("Glucose", 145.0)}  # HR 400 not used (an outlier, kept marked); heart rhythm is no channel
    assert vitals.loc[vitals["not_used"] == "implausible", "value_text"].tolist() == ["400"]
    assert len(records[f"H{H3}"].vitals.table) == 6  # 5 chartevents + pH from labevents (HEMOLYZED is no vital)
    assert not records[f"H{H2}"].vitals.present
    assert (reader.stats.vital_rows_from_chartevents, reader.stats.vital_rows_from_labs) == (12, 2)
    assert any("outside the plausible range" in p.message for p in reader.problems)


def test_notes_from_discharge_and_radiology(admissions) -> None:
    notes = admissions[1][f"H{H1}"].notes
    assert [(n.category, n.text) for n in notes] == [("Radiology", RADIOLOGY_H1), ("Discharge summary", DISCHARGE_H1)]
    assert notes[0].time == pd.Timestamp("2180-05-06 23:40:00")
    assert len(admissions[1][f"H{H3}"].notes) == 1 and not admissions[1][f"H{H2}"].notes
    assert admissions[0].stats.note_rows == 3


def test_phenotypes_from_icd9_and_icd10_counted(admissions) -> None:
    reader, records = admissions
    # ICD-10 I10 and E11.9 through the CMS GEM: essential hypertension, diabetes without complication
    assert positives(records[f"H{H1}"]) == {CHF, RENAL, HYPERTENSION}
    assert positives(records[f"H{H2}"]) == {DYSRHYTHMIA, DIABETES}
    assert positives(records[f"H{H3}"]) == {SEPSIS, MORTALITY}
    assert positives(records[f"H{H4}"]) == set() and records[f"H{H4}"].labels[MORTALITY] == 0
    assert len(records[f"H{H1}"].labels) == 26
    unmapped = reader.stats.unmapped()
    assert (unmapped["icd10_rows"], sorted(unmapped["icd10_examples"])) == (2, ["E119", "I10"])
    assert (unmapped["icd10_mapped_rows"], unmapped["icd10_unmapped_rows"]) == (2, 0)
    assert (unmapped["unknown_icd9_rows"], unmapped["unknown_icd9_examples"]) == (1, ["0000"])
    assert reader.stats.diagnosis_rows == 7
    assert not any("ICD-10" in p.message for p in reader.problems)  # every ICD-10 code mapped: nothing to report
    assert any("no diagnoses" in p.message for p in records[f"H{H4}"].problems)


def test_cxr_linked_to_the_stay_containing_the_study(admissions) -> None:
    reader, records = admissions
    images = records[f"H{H1}"].images
    assert len(images) == 1
    image = images[0]
    assert (image.view, image.time) == ("PA", pd.Timestamp("2180-05-06 23:59:00"))
    assert image.source.endswith(f"s{CXR_INSIDE[0]}/{CXR_INSIDE[1]}.jpg")
    assert image.pixels.shape == (64, 48) and image.metadata.file_format == "jpeg"
    assert np.abs(image.pixels - image_pixels()).max() < 0.02
    assert sum(len(r.images) for r in records.values()) == 1  # the study outside every stay is in no record
    assert (reader.stats.image_rows, reader.stats.image_rows_linked, reader.stats.images_missing) == (3, 2, 1)


def test_missing_image_file_is_a_record_warning(admissions) -> None:
    record = admissions[1][f"H{H3}"]
    assert not record.images
    [problem] = [p for p in record.problems if p.field == "dicom_id"]
    assert problem.severity is Severity.WARNING and CXR_MISSING[1] in problem.message


# -------------------------------------------------------------------------------------- ICU stays


def test_icu_stays_split_an_admission_by_time(stays) -> None:
    reader, records = stays
    assert reader.ids == [f"S{STAY1}", f"S{STAY2}", f"S{STAY3}"]
    first, second = records[f"S{STAY2}"], records[f"S{STAY3}"]
    assert first.index_time == pd.Timestamp("2160-11-21 03:00:00")
    assert first.labs.table["value_text"].tolist() == ["1.3", "7.31"]  # INR before the first stay goes to it
    assert second.labs.table["value_text"].tolist() == ["HEMOLYZED"]
    assert sorted(first.vitals.table["channel"]) == ["Heart Rate", "Respiratory rate", "pH"]
    assert second.vitals.table["value"].tolist() == [80.0, 97.0, 85.0]  # the row without stay_id placed by time
    assert [n.category for n in second.notes] == ["Discharge summary"]
    assert positives(first) == positives(second) == {SEPSIS, MORTALITY}
    assert len(records[f"S{STAY1}"].images) == 1 and not first.images
    assert reader.stats.lab_rows_unplaced == 3  # H2, H4 have no ICU stay, plus the unknown admission


def test_icu_stay_and_admission_records_agree_where_one_stay(stays, admissions) -> None:
    stay, admission = stays[1][f"S{STAY1}"], admissions[1][f"H{H1}"]
    pd.testing.assert_frame_equal(stay.labs.table, admission.labs.table)
    pd.testing.assert_frame_equal(stay.vitals.table, admission.vitals.table)


def test_limit_keeps_the_first_records(tree: Path) -> None:
    reader = Mimic4Reader(tree, limit=2)
    records = list(reader)
    assert [r.patient_id for r in records] == [f"H{H1}", f"H{H2}"]
    assert reader.stats.lab_rows_unplaced == 5  # H3 (3 rows), H4 and the unknown admission


# ------------------------------------------------------------------------------- absent, malformed


def test_absent_tables_mean_absent_modalities_with_reader_warnings(tmp_path: Path) -> None:
    root = write_mimic4_tree(tmp_path / "m", tables=("admissions", "patients"))
    reader = Mimic4Reader(root)
    records = list(reader)
    assert len(records) == 4
    assert all(not r.present_modalities for r in records)
    assert all(set(r.labels) == {MORTALITY} for r in records)
    missing = {p.field for p in reader.problems if "table not found" in p.message}
    assert missing == {"labevents", "d_labitems", "diagnoses_icd", "chartevents", "discharge", "radiology",
                       "mimic-cxr-2.0.0-metadata"}


def test_missing_required_table_or_column_is_a_data_error(tmp_path: Path) -> None:
    root = write_mimic4_tree(tmp_path / "m", tables=("patients",))
    with pytest.raises(DataError) as info:
        len(Mimic4Reader(root))
    assert info.value.problem.field == "admissions"
    root = write_mimic4_tree(tmp_path / "n", tables=("admissions",))
    with pytest.raises(DataError) as info:
        len(Mimic4Reader(root, unit="icustay"))
    assert info.value.problem.field == "icustays"
    path = root / "hosp" / "admissions.csv.gz"
    frame = pd.read_csv(path, dtype=str).drop(columns=["admittime"])
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, index=False)
    with pytest.raises(DataError) as info:
        len(Mimic4Reader(root))
    assert (info.value.problem.file, info.value.problem.field) == (str(path), "admittime")


def test_optional_table_missing_a_column_is_left_out_with_an_error(tmp_path: Path) -> None:
    root = write_mimic4_tree(tmp_path / "m", tables=("admissions", "labevents"))
    path = root / "hosp" / "labevents.csv.gz"
    frame = pd.read_csv(path, dtype=str).drop(columns=["itemid"])
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, index=False)
    reader = Mimic4Reader(root)
    records = list(reader)
    assert not any(r.labs.present for r in records)
    [problem] = [p for p in reader.problems if p.severity is Severity.ERROR]
    assert (problem.file, problem.field) == (str(path), "itemid")


def test_parquet_tables_read_like_csv(tmp_path: Path, tree: Path, admissions) -> None:
    root = tmp_path / "pq"
    shutil.copytree(tree, root)
    for name in ("admissions", "labevents"):
        path = next(root.rglob(f"{name}.csv.gz"))
        frame = pd.read_csv(path)  # typed: ids as integers, times as text
        frame.to_parquet(path.with_name(f"{name}.parquet"))
        path.unlink()
    records = {r.patient_id: r for r in Mimic4Reader(root)}
    assert list(records) == admissions[0].ids
    pd.testing.assert_frame_equal(records[f"H{H1}"].labs.table, admissions[1][f"H{H1}"].labs.table)


# ----------------------------------------------------------------------------------------- import


def test_import_mimic4_writes_bundles_and_cohort(tmp_path: Path, tree: Path) -> None:
    summary = import_mimic4(tree, tmp_path / "out", progress=False)
    cohort = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert (cohort["source"], cohort["n"], cohort["unit"]) == ("mimic4", 4, "admission")
    assert cohort["modality_counts"] == {"labs": 4, "notes": 2, "vitals": 2, "image": 1}
    assert cohort["row_counts"]["image"] == 1
    assert cohort["unmapped_codes"]["icd10_rows"] == 2 and cohort["unmapped_codes"]["icd10_unmapped_rows"] == 0
    bundle = read_bundle(tmp_path / "out" / f"H{H1}")
    vitals = bundle.vitals.table  # the outlier HR 400 is kept for display, marked, not used
    assert len(bundle.images) == 1 and len(vitals) == 8 and (vitals["not_used"] == "").sum() == 7
    assert "chest X-rays: 3 in the metadata" in summary.describe()


def test_cli_import_mimic4(tmp_path: Path, tree: Path, capsys) -> None:
    assert main(["import", "mimic4", "--root", str(tree), "--out", str(tmp_path / "b"), "--unit", "icustay",
                 "--quiet", "--memory-limit", "500MB"]) == 0
    assert "3 icustay records" in capsys.readouterr().out
    assert main(["import", "mimic4", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "c")]) == 2
