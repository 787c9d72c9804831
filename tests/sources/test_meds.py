"""The MEDS reader on the two-subject fixture of fixtures_mimic4.py: exact counts and values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medfuse_core.cli import main
from medfuse_core.problems import DataError
from medfuse_core.sources.importer import import_meds
from medfuse_core.sources.meds import MedsReader
from tests.sources.fixtures_mimic4 import MEDS_DISCHARGE, meds_rows, write_meds_tree

MORTALITY = "In-hospital mortality"
CHF = "Congestive heart failure; nonhypertensive"
SEPSIS = "Septicemia (except in labor)"
HYPERTENSION = "Essential hypertension"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_meds_tree(tmp_path_factory.mktemp("meds") / "meds")


@pytest.fixture(scope="module")
def subjects(tree: Path):
    reader = MedsReader(tree)
    return reader, {r.patient_id: r for r in reader}


@pytest.fixture(scope="module")
def admissions(tree: Path):
    reader = MedsReader(tree, unit="admission")
    return reader, {r.patient_id: r for r in reader}


def positives(record) -> set[str]:
    return {name for name, value in (record.labels or {}).items() if value}


def test_one_record_per_subject_across_shards(subjects) -> None:
    reader, records = subjects
    assert reader.ids == ["P1", "P2"]
    p1, p2 = records["P1"], records["P2"]
    assert (p1.sex, p1.index_time, p1.age) == ("F", pd.Timestamp("2160-01-01 08:00"), 60.0)
    assert (p2.sex, p2.age) == ("M", 69.58)
    assert len(p1.labs.table) == 3 and len(p1.vitals.table) == 3 and len(p1.notes) == 1
    # ICD-10 I10 through the CMS GEM: essential hypertension
    assert positives(p1) == {CHF, SEPSIS, MORTALITY, HYPERTENSION} and positives(p2) == set()
    assert p2.labels[MORTALITY] == 0


def test_codes_mapped_by_prefix(subjects) -> None:
    p1 = subjects[1]["P1"]
    labs = p1.labs.table
    assert labs[["itemid", "item", "value_text", "unit"]].values.tolist() == [
        [50912, "Creatinine", "1.5", "mg/dL"], [50931, "", "HEMOLYZED", "mg/dL"], [50912, "Creatinine", "1.1", "mg/dL"]]
    vitals = p1.vitals.table
    assert list(zip(vitals["channel"], vitals["value"])) == [("Systolic blood pressure", 120.0), ("Heart Rate", 88.0),
                                                           ("Heart Rate", 100.0)]  # MEASUREMENT//220179, VITALS//HR
    note = p1.notes[0]
    assert (note.category, note.text, note.time) == ("Discharge summary", MEDS_DISCHARGE, pd.Timestamp("2160-01-03 12:00"))


def test_unknown_codes_counted_and_reported(subjects) -> None:
    reader = subjects[0]
    assert dict(reader.stats.other_codes) == {"PROCEDURE": 1, "FOO": 1}
    assert reader.stats.unmapped()["icd10_rows"] == 1 and reader.stats.unmapped()["icd10_unmapped_rows"] == 0
    messages = [p.message for p in reader.problems]
    assert any("codes not used" in m and "FOO//BAR" in m for m in messages)
    assert not any("ICD-10" in m for m in messages)  # the one ICD-10 code (I10) is mapped
    assert (reader.stats.rows, reader.stats.rows_unplaced) == (19, 0)


def test_admissions_delimited_by_admission_and_discharge_codes(admissions) -> None:
    reader, records = admissions
    assert reader.ids == ["H1001", "H1002"]
    first, second = records["H1001"], records["H1002"]
    assert (first.index_time, second.index_time) == (pd.Timestamp("2160-01-01 08:00"), pd.Timestamp("2161-05-01 07:00"))
    assert len(first.labs.table) == 2  # the lab between the stays is in neither
    assert positives(first) == {CHF, HYPERTENSION} and positives(second) == {SEPSIS, MORTALITY}
    assert second.vitals.table["value"].tolist() == [100.0] and not second.labs.present
    assert reader.stats.rows_unplaced == 4  # the lab between stays, subject 2's three events


def test_admission_ids_without_hadm_column(tmp_path: Path, tree: Path) -> None:
    for path in (tree / "data").rglob("*.parquet"):
        out = tmp_path / "data" / path.relative_to(tree / "data")
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(path).drop(["hadm_id", "text_value"]), out)
    reader = MedsReader(tmp_path, unit="admission")
    assert [r.patient_id for r in reader] == ["H1_1", "H1_2"]
    assert any(p.field == "text_value" for p in reader.problems)


def test_no_shards_or_missing_column_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        MedsReader(tmp_path)
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"subject_id": [1], "time": [None]}), tmp_path / "data" / "0.parquet")
    with pytest.raises(DataError) as info:
        MedsReader(tmp_path)
    assert info.value.problem.field == "code"


def test_import_meds_and_cli(tmp_path: Path, tree: Path, capsys) -> None:
    summary = import_meds(tree, tmp_path / "out", progress=False)
    cohort = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert (cohort["source"], cohort["n"], cohort["unit"]) == ("meds", 2, "subject")
    assert cohort["unmapped_codes"]["unknown_code_rows"] == 2
    assert "event rows: 19 read" in summary.describe()
    assert main(["import", "meds", "--root", str(tree), "--out", str(tmp_path / "b"), "--unit", "admission",
                 "--quiet"]) == 0
    assert "2 admission records" in capsys.readouterr().out
    assert main(["import", "meds", "--root", str(tree), "--out", str(tmp_path / "c"), "--unit", "icustay"]) == 2


def test_icd10_codes_the_gem_does_not_map_are_counted_and_reported(tmp_path: Path, tree: Path) -> None:
    shutil.copytree(tree, tmp_path / "meds")
    extra = meds_rows([(1, pd.Timestamp("2160-01-03 12:00"), "DIAGNOSIS//ICD//10//E7800", None, None, 1001)])
    pq.write_table(extra, tmp_path / "meds" / "data" / "train" / "1.parquet")
    reader = MedsReader(tmp_path / "meds")
    records = {r.patient_id: r for r in reader}
    unmapped = reader.stats.unmapped()
    assert (unmapped["icd10_rows"], unmapped["icd10_unmapped_rows"], unmapped["icd10_unmapped_examples"]) == (2, 1, ["E7800"])
    assert any("1 of 2 ICD-10 diagnosis rows not mapped" in p.message and "E7800" in p.message for p in reader.problems)
    assert records["P1"].labels[HYPERTENSION] == 1
