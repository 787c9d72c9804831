"""The MIMIC-III reader and importer on the real MIMIC-III demo (../shared/data/mimic-iii-demo).

Expected numbers are counted here independently, with plain pandas / yaml on the shared files.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from importlib import resources
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medfuse_core.cli import main
from medfuse_core.problems import DataError, Severity
from medfuse_core.record import Labs, Vitals
from medfuse_core.sources.labs import labs_from_table
from medfuse_core.sources.mimic3 import MAX_AGE, Mimic3Reader
from medfuse_core.sources.importer import import_mimic3
from medfuse_core.sources.validate import validate_tree

N_ADMISSIONS = 129
N_ICUSTAYS = 136
N_PATIENTS = 100
N_LAB_ROWS_WITH_HADM = 61_812  # of 76,074 rows of LABEVENTS_PARTIAL (counted in test_lab_row_count_of_the_file)
MORTALITY = "In-hospital mortality"


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def demo(shared_data: Path) -> Path:
    return shared_data / "mimic-iii-demo"


@pytest.fixture(scope="module")
def benchmarks(shared_data: Path) -> Path:
    return shared_data / "mimic3-benchmarks"


@pytest.fixture(scope="module")
def admission_reader(demo: Path) -> tuple[Mimic3Reader, list]:
    reader = Mimic3Reader(demo)
    return reader, list(reader)


@pytest.fixture(scope="module")
def records(admission_reader) -> dict:
    return {r.patient_id: r for r in admission_reader[1]}


@pytest.fixture(scope="module")
def labevents(demo: Path) -> pd.DataFrame:
    return read(demo / "LABEVENTS_PARTIAL.csv.gz")


@pytest.fixture
def demo_copy(demo: Path, tmp_path: Path) -> Path:
    """A writable copy of the demo tables (never modify ../shared)."""
    out = tmp_path / "mimic"
    out.mkdir()
    for path in demo.glob("*.csv.gz"):
        shutil.copyfile(path, out / path.name)
    return out


# ------------------------------------------------------------------------------- records and labs


def test_lab_row_count_of_the_file(labevents: pd.DataFrame) -> None:
    assert len(labevents) == 76_074
    assert (labevents["HADM_ID"] != "").sum() == N_LAB_ROWS_WITH_HADM


def test_one_record_per_admission(admission_reader, demo: Path) -> None:
    reader, recs = admission_reader
    admissions = read(demo / "ADMISSIONS.csv.gz")
    assert len(recs) == len(reader) == N_ADMISSIONS
    assert sorted(r.patient_id for r in recs) == sorted("H" + admissions["hadm_id"])
    assert reader.index["subject_id"].nunique() == N_PATIENTS
    times = dict(zip("H" + admissions["hadm_id"], pd.to_datetime(admissions["admittime"])))
    assert all(r.index_time == times[r.patient_id] for r in recs)


def test_every_lab_row_with_a_hadm_id_is_in_exactly_its_admission(records, labevents: pd.DataFrame) -> None:
    assert sum(len(r.labs.table) for r in records.values()) == N_LAB_ROWS_WITH_HADM
    per_admission = labevents[labevents["HADM_ID"] != ""].groupby("HADM_ID").size()
    assert {k[1:]: len(r.labs.table) for k, r in records.items()} == per_admission.to_dict()


def test_lab_columns_names_units_and_text(records, demo: Path, labevents: pd.DataFrame) -> None:
    items = read(demo / "D_LABITEMS.csv.gz").set_index("itemid")["label"]
    labs = pd.concat([r.labs.table for r in records.values()], ignore_index=True)
    assert (labs["item"] == labs["itemid"].astype(str).map(items)).all()
    kept = labevents[labevents["HADM_ID"] != ""]
    assert Counter(labs["value_text"]) == Counter(kept["VALUE"])
    assert Counter(labs["unit"]) == Counter(kept["VALUEUOM"].str.strip())  # 230 units are a lone space
    assert Counter(labs["flag"]) == Counter(kept["FLAG"].str.strip())
    assert set(labs["censored"]) >= {"below", "above"}  # "<0.5", "GREATER THAN 500" in the demo
    assert labs["time"].notna().all()


def test_split_tables_equal_parsing_each_admission_alone(records, labevents: pd.DataFrame, demo: Path) -> None:
    items = read(demo / "D_LABITEMS.csv.gz").set_index("itemid")["label"]
    for hadm in ("142345", "105331", "193924"):
        rows = labevents[labevents["HADM_ID"] == hadm]
        raw = pd.DataFrame({"time": rows["CHARTTIME"], "itemid": rows["ITEMID"], "item": rows["ITEMID"].map(items),
                            "value": rows["VALUE"], "unit": rows["VALUEUOM"], "flag": rows["FLAG"]})
        alone, _ = labs_from_table(raw, "x")
        pd.testing.assert_frame_equal(records["H" + hadm].labs.table, alone.table)
    record = records["H142345"]  # tables built without re-conforming are in contract form all the same
    pd.testing.assert_frame_equal(record.labs.table, Labs(record.labs.table).table)
    pd.testing.assert_frame_equal(record.vitals.table, Vitals(record.vitals.table).table)


def test_demographics_and_age_cap(records, demo: Path) -> None:
    patients = read(demo / "PATIENTS.csv.gz").set_index("subject_id")
    admissions = read(demo / "ADMISSIONS.csv.gz").set_index("hadm_id")
    years = {}
    for hadm, row in admissions.iterrows():
        dob = pd.Timestamp(patients.loc[row["subject_id"], "dob"])
        years[hadm] = (pd.Timestamp(row["admittime"]).year - dob.year)
        assert records["H" + hadm].sex == patients.loc[row["subject_id"], "gender"]
    shifted = {h for h, y in years.items() if y > 200}
    assert len(shifted) == 9
    for hadm in shifted:
        record = records["H" + hadm]
        assert record.age == MAX_AGE
        assert any(p.field == "dob" and "older than 89" in p.message for p in record.problems)
    others = [records["H" + h].age for h in years if h not in shifted]
    assert all(15 <= a <= 90 for a in others)


# ---------------------------------------------------------------------------------------- labels


def test_phenotype_prevalences_equal_an_independent_count(records, demo: Path, benchmarks: Path) -> None:
    definitions = yaml.safe_load((benchmarks / "hcup_ccs_2015_definitions.yaml").read_text())
    code_to_group = {code: name for name, g in definitions.items() for code in g["codes"]}
    benchmark = {name for name, g in definitions.items() if g["use_in_benchmark"]}
    diagnoses = read(demo / "DIAGNOSES_ICD.csv.gz")
    diagnoses["group"] = diagnoses["icd9_code"].map(code_to_group)
    positives = diagnoses[diagnoses["group"].isin(benchmark)][["hadm_id", "group"]].drop_duplicates()
    expected = positives.groupby("group").size().reindex(sorted(benchmark), fill_value=0)
    found = {name: sum(r.labels[name] for r in records.values()) for name in sorted(benchmark)}
    assert found == expected.to_dict()
    # a few by name, as measured on the demo (129 admissions)
    assert found["Septicemia (except in labor)"] == 44
    assert found["Cardiac dysrhythmias"] == 58
    assert found["Acute and unspecified renal failure"] == 51
    # per admission, not only in total
    for hadm, groups in positives.groupby("hadm_id")["group"]:
        labels = records["H" + hadm].labels
        assert {n for n in benchmark if labels[n]} == set(groups)


def test_mortality_equals_hospital_expire_flag(records, demo: Path) -> None:
    admissions = read(demo / "ADMISSIONS.csv.gz")
    expected = dict(zip("H" + admissions["hadm_id"], admissions["hospital_expire_flag"].astype(int)))
    assert {k: r.labels[MORTALITY] for k, r in records.items()} == expected
    assert sum(expected.values()) == 40


# ---------------------------------------------------------------------------------------- vitals


def test_lab_vitals_are_the_benchmark_labevents_rows(records, labevents: pd.DataFrame, benchmarks: Path) -> None:
    var_map = read(benchmarks / "itemid_to_variable_map.csv")
    ready = var_map[(var_map["LEVEL2"] != "") & (pd.to_numeric(var_map["COUNT"], errors="coerce") > 0)
                    & (var_map["STATUS"] == "ready") & (var_map["LINKSTO"] == "labevents")]
    channel_of = dict(zip(ready["ITEMID"], ready["LEVEL2"]))
    assert set(channel_of.values()) == {"Glucose", "pH", "Oxygen saturation"}
    ranges = pd.read_csv(benchmarks / "variable_ranges.csv").drop_duplicates("LEVEL2").set_index("LEVEL2")
    rows = labevents[(labevents["HADM_ID"] != "") & labevents["ITEMID"].isin(channel_of)].copy()
    rows["channel"] = rows["ITEMID"].map(channel_of)
    rows = rows[rows["VALUE"].str.fullmatch(r"\d+(\.\d*)?|\.\d+")]  # the benchmark's clean_lab
    value = rows["VALUE"].astype(float)
    low = rows["channel"].map(ranges["OUTLIER LOW"])
    high = rows["channel"].map(ranges["OUTLIER HIGH"])
    rows = rows[(value >= low) & (value <= high)]  # remove_outliers_for_variable
    assert set(rows["channel"]) == {"Glucose", "pH", "Oxygen saturation"}
    # outliers stay in the table for display, marked not_used = "implausible"; the rows the model may read:
    usable = {k: r.vitals.table[r.vitals.table["not_used"] == ""] for k, r in records.items()}
    assert sum(len(t) for t in usable.values()) == len(rows) == 3635
    for hadm, part in rows.groupby("HADM_ID"):
        vitals = usable["H" + hadm]
        assert Counter(zip(vitals["channel"], vitals["value_text"])) == Counter(zip(part["channel"], part["VALUE"]))
    assert all(r.has("vitals") for r in records.values())


# ------------------------------------------------------------------------------ notes, ICU stays


def test_header_only_noteevents_gives_no_notes_and_no_error(admission_reader) -> None:
    reader, recs = admission_reader
    assert all(r.notes == [] and not r.has("notes") for r in recs)
    assert not [p for p in reader.problems if p.severity is Severity.ERROR]
    assert not [p for p in reader.problems if "NOTEEVENTS" in p.file + p.field]
    assert [p.field for p in reader.problems if "not found" in p.message] == ["CHARTEVENTS"]


def test_icustay_unit(demo: Path, labevents: pd.DataFrame) -> None:
    reader = Mimic3Reader(demo, unit="icustay")
    recs = list(reader)
    stays = read(demo / "ICUSTAYS.csv.gz")
    assert len(recs) == N_ICUSTAYS
    assert sorted(r.patient_id for r in recs) == sorted("S" + stays["icustay_id"])
    intime = dict(zip("S" + stays["icustay_id"], pd.to_datetime(stays["intime"])))
    assert all(r.index_time == intime[r.patient_id] for r in recs)
    # every admission has a stay in the demo: each lab row lands in exactly one of its admission's stays
    assert sum(len(r.labs.table) for r in recs) == N_LAB_ROWS_WITH_HADM
    hadm_of = dict(zip("S" + stays["icustay_id"], stays["hadm_id"]))
    per_admission = Counter()
    for r in recs:
        per_admission[hadm_of[r.patient_id]] += len(r.labs.table)
        later = stays[(stays["hadm_id"] == hadm_of[r.patient_id])
                      & (pd.to_datetime(stays["intime"]) > r.index_time)]
        if len(r.labs.table) and len(later):  # rows never reach past the next stay's intime
            assert r.labs.table["time"].max() < pd.to_datetime(later["intime"]).min()
    assert dict(per_admission) == labevents[labevents["HADM_ID"] != ""].groupby("HADM_ID").size().to_dict()


def test_notes_are_read_when_present(demo_copy: Path) -> None:
    (demo_copy / "NOTEEVENTS.csv.gz").unlink()
    (demo_copy / "noteevents.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,CHARTDATE,CHARTTIME,CATEGORY,ISERROR,TEXT\n"
        '1,10006,142345,2164-10-24,,Discharge summary,,"Sepsis.\nNo evidence of pneumonia."\n'
        "2,10006,142345,2164-10-23,2164-10-23 22:00:00,Nursing,1,entered in error\n"
        "3,10006,,2164-12-01,,Radiology,,outpatient film\n",
        encoding="utf-8",
    )
    reader = Mimic3Reader(demo_copy, limit=3)
    record = next(r for r in reader if r.patient_id == "H142345")
    assert [(n.category, n.text) for n in record.notes] == [("Discharge summary", "Sepsis.\nNo evidence of pneumonia.")]
    assert record.notes[0].time == pd.Timestamp("2164-10-24")
    assert reader.stats.notes_in_error == 1 and reader.stats.note_rows == 1


# --------------------------------------------------------------------------------- import + CLI


def test_import_writes_bundles_and_cohort_json(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    summary = import_mimic3(demo, out, progress=False)
    assert summary.n == N_ADMISSIONS
    assert summary.row_counts["labs"] == N_LAB_ROWS_WITH_HADM
    assert summary.modality_counts == {"labs": 129, "notes": 0, "vitals": 129, "image": 0}
    assert len([p for p in out.iterdir() if (p / "patient.json").is_file()]) == N_ADMISSIONS
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["n"] == N_ADMISSIONS and len(cohort["label_names"]) == 26
    assert cohort["label_names"][-1] == MORTALITY and cohort["label_counts"][MORTALITY] == 40
    assert cohort["unmapped_codes"]["icd10_rows"] == 0
    text = summary.describe()
    assert "labs    in 129 of 129 records, 61812 rows" in text and "CHARTEVENTS (absent)" in text
    patient = json.loads((out / "H142345" / "patient.json").read_text())
    assert patient["labels"]["Septicemia (except in labor)"] == 1


def test_imported_bundles_validate_without_errors(demo: Path, tmp_path: Path) -> None:
    # validating all 129 bundles takes ~30 s on a shared CPU; the first 20 (1,000s of lab rows) in ~5 s
    out = tmp_path / "bundles"
    import_mimic3(demo, out, limit=20, progress=False)
    reports = validate_tree(out)
    assert len(reports) == 20
    assert [str(p) for r in reports for p in r.errors] == []
    assert all(r.modalities == ("labs", "vitals") for r in reports)


def test_cli_import_with_limit(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert main(["import", "mimic3", "--root", str(demo), "--out", str(out), "--limit", "3", "--quiet",
                 "--unit", "icustay"]) == 0
    printed = capsys.readouterr().out
    assert "3 icustay records" in printed and "lab rows:" in printed
    assert len([p for p in out.iterdir() if p.is_dir()]) == 3


# ----------------------------------------------------------------------------- malformed inputs


def write_gz(path: Path, table: pd.DataFrame) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        table.to_csv(f, index=False)


def test_missing_required_column_of_admissions_raises(demo_copy: Path) -> None:
    admissions = read(demo_copy / "ADMISSIONS.csv.gz").drop(columns=["hadm_id"])
    write_gz(demo_copy / "ADMISSIONS.csv.gz", admissions)
    with pytest.raises(DataError) as info:
        len(Mimic3Reader(demo_copy))
    assert info.value.problem.file.endswith("ADMISSIONS.csv.gz") and info.value.problem.field == "hadm_id"


def test_missing_admissions_table_raises(demo_copy: Path) -> None:
    (demo_copy / "ADMISSIONS.csv.gz").unlink()
    with pytest.raises(DataError, match="ADMISSIONS"):
        list(Mimic3Reader(demo_copy))


def test_lab_table_without_value_column_is_an_error_problem_and_no_labs(demo_copy: Path) -> None:
    labs = read(demo_copy / "LABEVENTS_PARTIAL.csv.gz").drop(columns=["VALUE"])
    write_gz(demo_copy / "LABEVENTS_PARTIAL.csv.gz", labs)
    reader = Mimic3Reader(demo_copy, limit=5)
    recs = list(reader)
    errors = [p for p in reader.problems if p.severity is Severity.ERROR]
    assert len(errors) == 1
    assert errors[0].file.endswith("LABEVENTS_PARTIAL.csv.gz") and errors[0].field == "value"
    assert all(not r.has("labs") and not r.has("vitals") for r in recs)
    assert all(r.labels is not None for r in recs)


def test_missing_optional_tables_give_absent_modalities_and_one_warning_each(demo_copy: Path) -> None:
    (demo_copy / "LABEVENTS_PARTIAL.csv.gz").unlink()
    (demo_copy / "DIAGNOSES_ICD.csv.gz").unlink()
    reader = Mimic3Reader(demo_copy, limit=4)
    recs = list(reader)
    assert len(recs) == 4
    missing = sorted(p.field for p in reader.problems if "not found" in p.message)
    assert missing == ["CHARTEVENTS", "DIAGNOSES_ICD", "LABEVENTS"]
    assert all(not r.has("labs") and not r.has("vitals") for r in recs)
    assert all(set(r.labels) == {MORTALITY} for r in recs)
    assert all(not any("not found" in p.message for p in r.problems) for r in recs)  # on the reader only


def test_lower_case_file_names_and_upper_case_headers(demo_copy: Path) -> None:
    admissions = read(demo_copy / "ADMISSIONS.csv.gz")
    admissions.columns = [c.upper() for c in admissions.columns]
    (demo_copy / "ADMISSIONS.csv.gz").unlink()
    admissions.to_csv(demo_copy / "admissions.csv", index=False)
    reader = Mimic3Reader(demo_copy)
    assert len(reader) == N_ADMISSIONS
    assert reader.stats.tables["ADMISSIONS"] == "admissions.csv"


def test_icd10_codes_are_counted_as_unmapped(demo_copy: Path) -> None:
    diagnoses = read(demo_copy / "DIAGNOSES_ICD.csv.gz")
    first = diagnoses["hadm_id"].iloc[0]
    extra = pd.DataFrame({"row_id": ["1", "2"], "subject_id": [diagnoses["subject_id"].iloc[0]] * 2,
                          "hadm_id": [first] * 2, "seq_num": ["98", "99"], "icd9_code": ["I10", "J18.9"]})
    write_gz(demo_copy / "DIAGNOSES_ICD.csv.gz", pd.concat([diagnoses, extra], ignore_index=True))
    reader = Mimic3Reader(demo_copy, limit=1)
    list(reader)
    assert reader.stats.unmapped()["icd10_rows"] == 2
    assert reader.stats.unmapped()["icd10_examples"] == ["I10", "J189"]
    assert any("ICD-10" in p.message for p in reader.problems)


def test_vendored_ready_variable_map_is_the_benchmark_filter_of_the_shared_map(benchmarks: Path) -> None:
    """itemid_to_variable_map_ready.csv = read_itemid_to_variable_map's rows of the shared 1 MB map."""
    var_map = read(benchmarks / "itemid_to_variable_map.csv")
    ready = var_map[(var_map["LEVEL2"] != "") & (pd.to_numeric(var_map["COUNT"], errors="coerce") > 0)
                    & (var_map["STATUS"] == "ready")][["LEVEL2", "ITEMID", "MIMIC LABEL", "LINKSTO", "UNITNAME"]]
    text = resources.files("medfuse_core.resources").joinpath("mimic3_benchmarks",
                                                              "itemid_to_variable_map_ready.csv").read_text()
    vendored = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(vendored, ready.reset_index(drop=True))
    assert len(vendored) == 114 and Counter(vendored["LINKSTO"]) == {"chartevents": 106, "labevents": 8}


def test_chartevents_vitals_through_the_benchmark_map(demo_copy: Path) -> None:
    (demo_copy / "CHARTEVENTS.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,ITEMID,CHARTTIME,VALUE,VALUEUOM\n"
        "1,10006,142345,206504,211,2164-10-23 22:00:00,86,bpm\n"
        "2,10006,142345,206504,3581,2164-10-23 22:00:00,150,\n"  # Present Weight (lb) -> kg
        "3,10006,142345,206504,1394,2164-10-23 22:00:00,70,\n"  # Height Inches -> cm
        "4,10006,142345,206504,999999,2164-10-23 22:00:00,1,\n"  # not a benchmark item: left out
        "5,10011,105331,232110,211,2126-08-14 23:00:00,90,bpm\n",  # another admission (beyond the limit)
        encoding="utf-8",
    )
    reader = Mimic3Reader(demo_copy, limit=1)
    record = next(iter(reader))
    assert record.patient_id == "H142345"
    vitals = record.vitals.table
    chart = vitals[vitals["time"] == pd.Timestamp("2164-10-23 22:00:00")].set_index("channel")["value"]
    assert chart.to_dict() == {"Heart Rate": 86.0, "Weight": pytest.approx(68.04, abs=0.01), "Height": 178.0}
    assert reader.stats.vital_rows_from_chartevents == 3
    assert not any(p.field == "CHARTEVENTS" for p in reader.problems)


def test_bad_lab_row_is_reported_with_its_file_row_number(demo_copy: Path) -> None:
    labs = read(demo_copy / "LABEVENTS_PARTIAL.csv.gz")
    rows = np.flatnonzero(labs["HADM_ID"] == "142345")
    labs.loc[rows[3], "CHARTTIME"] = "not a time"
    write_gz(demo_copy / "LABEVENTS_PARTIAL.csv.gz", labs)
    reader = Mimic3Reader(demo_copy, limit=1)
    record = next(iter(reader))
    assert len(record.labs.table) == len(rows) - 1
    assert [p.field for p in reader.problems if "time" in p.field] == [f"row {rows[3] + 1}: time"]
