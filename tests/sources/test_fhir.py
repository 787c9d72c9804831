"""`import fhir`: FHIR R4 Bundles (fixtures_fhir.py, validated here with fhir.resources R4B) -> patient bundles."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from medfuse_core.cli import main
from medfuse_core.problems import Severity
from medfuse_core.sources.bundle import read_bundle
from medfuse_core.sources.fhir import VITAL_LOINC, import_fhir, read_fhir_bundle
from medfuse_core.sources.phenotypes import benchmark_phenotypes
from medfuse_core.sources.vital_channels import CHANNEL_NAMES
from tests.sources.fixtures_fhir import (
    FILMS,
    MALFORMED,
    NOTE_TEXT,
    SYNTHEA,
    films_bundle,
    malformed_bundle,
    png_bytes,
    synthea_bundle,
    write_fhir_folder,
)

MORTALITY = "In-hospital mortality"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("fhir")
    root = write_fhir_folder(base / "in")
    summary = import_fhir(root, base / "out", progress=False)
    return root, base / "out", summary


def test_fixtures_are_valid_r4_bundles_and_the_malformed_one_is_not() -> None:
    for data in (synthea_bundle(), films_bundle("film.png")):
        assert Bundle.model_validate(data).entry
    with pytest.raises(ValidationError, match="valueQuantity"):
        Bundle.model_validate(malformed_bundle())


def test_vital_loinc_codes_land_on_model_channels() -> None:
    assert set(VITAL_LOINC.values()) <= set(CHANNEL_NAMES)
    assert {VITAL_LOINC[c] for c in ("8867-4", "8480-6", "8462-4", "8478-0", "9279-1", "8310-5", "2708-6", "59408-5",
                                     "29463-7", "8302-2", "2339-0")} == {
        "Heart Rate", "Systolic blood pressure", "Diastolic blood pressure", "Mean blood pressure", "Respiratory rate",
        "Temperature", "Oxygen saturation", "Weight", "Height", "Glucose"}


def test_one_bundle_per_patient_file_and_unreadable_files_reported(imported) -> None:
    root, out, summary = imported
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([SYNTHEA, MALFORMED, FILMS])
    assert (summary.n, summary.files) == (3, 5)
    errors = {Path(p.file).name: p.message for p in summary.problems if p.severity is Severity.ERROR}
    assert "expected a FHIR Bundle in JSON" in errors["broken.json"]
    assert "found 'Patient'" in errors["not_a_bundle.json"]
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["source"] == "fhir" and sorted(cohort["patients"]) == sorted([SYNTHEA, MALFORMED, FILMS])
    listed = rows(out / "import_problems.csv")
    assert len(listed) == len(summary.problems) and {r["severity"] for r in listed} == {"error", "warning"}


def test_patient_demographics_index_time_and_labels(imported) -> None:
    _, out, _ = imported
    meta = json.loads((out / SYNTHEA / "patient.json").read_text())
    # the latest inpatient encounter, not the 2015 wellness visit; age in completed years at its start
    assert (meta["age"], meta["sex"], meta["index_time"]) == (70.0, "F", "2021-03-04T10:00:00-05:00")
    positives = {k for k, v in meta["labels"].items() if v}
    # SNOMED diabetes and hypertension (active for years), ICD-10-CM I50.9; the sinusitis resolved in 2015
    assert positives == {"Diabetes mellitus without complication", "Essential hypertension",
                         "Congestive heart failure; nonhypertensive"}
    assert set(meta["labels"]) == set(benchmark_phenotypes()) | {MORTALITY} and meta["labels"][MORTALITY] == 0
    died = json.loads((out / MALFORMED / "patient.json").read_text())
    assert died["labels"][MORTALITY] == 1 and died["labels"]["Septicemia (except in labor)"] == 1  # ICD-10 A41.9
    assert (died["age"], died["sex"]) == (79.0, "M")


def test_labs_written_as_the_source_says_with_loinc(imported) -> None:
    _, out, _ = imported
    labs = rows(out / SYNTHEA / "labs.csv")
    assert [r["loinc"] for r in labs] == ["2339-0", "2160-0", "2524-7", "6690-2"]  # not the 2015 glucose
    glucose, creatinine, lactate, wbc = labs
    assert (glucose["value"], glucose["unit"], glucose["time"]) == ("5.9", "mmol/L", "2021-03-04T11:00:00-05:00")
    assert (creatinine["ref_low"], creatinine["ref_high"], creatinine["flag"]) == ("0.5", "1.1", "high")
    assert lactate["value"] == "<0.5"  # the comparator kept: censored below
    assert wbc["unit"] == "10*3/uL"  # the UCUM code, not the display "10^3/uL"
    assert creatinine["item"] == "Creatinine [Mass/volume] in Serum or Plasma"


def test_vitals_on_benchmark_channels_with_units_as_given(imported) -> None:
    _, out, summary = imported
    vitals = {r["channel"]: (r["value"], r["unit"]) for r in rows(out / SYNTHEA / "vitals.csv")}
    assert vitals == {
        "Systolic blood pressure": ("151", "mm[Hg]"), "Diastolic blood pressure": ("88", "mm[Hg]"),  # BP panel components
        "Heart Rate": ("112", "/min"), "Temperature": ("101.3", "[degF]"), "Weight": ("154.3", "[lb_av]"),
        "Glucose": ("5.9", "mmol/L"),  # laboratory glucose also feeds the Glucose channel, as in the MIMIC readers
    }
    assert summary.counts["vital signs on no model channel (LOINC 39156-5)"] == 1  # BMI


def test_unused_resources_and_categories_counted_never_fatal(imported) -> None:
    _, _, summary = imported
    assert summary.ignored_types == {"Claim": 1, "Immunization": 1, "MedicationRequest": 1, "Provenance": 1}
    c = summary.counts
    assert c["observations not read (social-history)"] == 1 and c["observations not read (survey)"] == 1
    assert c["outside the index encounter"] == 1  # the 2015 glucose
    assert c["diagnostic reports without text (results read as Observations)"] == 1
    assert c["imaging studies (no pixels in FHIR)"] == 1
    assert c["conditions not active during the index encounter"] == 1
    assert summary.unmapped_conditions == {"http://snomed.info/sct|10509002 Acute bronchitis (disorder)": 1}
    text = summary.describe()
    assert "resource types not used: Claim 1, Immunization 1, MedicationRequest 1, Provenance 1" in text
    assert "Acute bronchitis" in text


def test_malformed_observation_costs_only_itself(imported) -> None:
    _, out, summary = imported
    bad = [p for p in summary.problems if "bad-obs" in p.field]
    assert len(bad) == 1 and bad[0].file.endswith("malformed.json")
    assert bad[0].field == "entry[2] Observation/bad-obs: valueQuantity.value" and "not valid FHIR R4" in bad[0].message
    labs = rows(out / MALFORMED / "labs.csv")
    assert [(r["loinc"], r["value"]) for r in labs] == [("2951-2", "131")]  # the patient's other result is kept


def test_base64_note_decoded_once(imported) -> None:
    _, out, summary = imported
    index = rows(out / SYNTHEA / "notes" / "index.csv")
    assert [(r["category"], r["time"]) for r in index] == [("History and physical note", "2021-03-04T13:00:00.000-05:00")]
    assert (out / SYNTHEA / "notes" / index[0]["file"]).read_text(encoding="utf-8") == NOTE_TEXT
    assert summary.counts["duplicate notes (same text and time)"] == 1  # the DiagnosticReport copy


def test_films_inline_binary_and_local_file_outside_refused(imported) -> None:
    root, out, summary = imported
    index = rows(out / FILMS / "images" / "index.csv")
    assert [(r["view"], r["time"]) for r in index] == [
        ("PA", "2022-01-01T06:00:00Z"), ("AP", "2022-01-02T06:00:00Z"), ("", "2022-01-02T08:00:00Z")]
    assert (out / FILMS / "images" / index[0]["file"]).read_bytes() == png_bytes()
    assert (out / FILMS / "images" / index[1]["file"]).read_bytes() == (root / "films" / "film.png").read_bytes()
    assert index[2]["file"].endswith(".jpg")
    outside = [p for p in summary.problems if "media-3" in p.field]
    assert len(outside) == 1 and "outside the import folder" in outside[0].message
    assert summary.counts["films not inline or local"] == 1


def test_imported_bundles_are_read_by_the_bundle_reader(imported) -> None:
    _, out, _ = imported
    record = read_bundle(out / SYNTHEA)
    assert len(record.labs.table) == 4 and len(record.vitals.table) == 6 and len(record.notes) == 1
    assert record.labels["Essential hypertension"] == 1
    films = read_bundle(out / FILMS)
    assert len(films.images) == 3 and films.images[0].pixels.shape == (32, 32)


def test_history_keeps_the_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(synthea_bundle()))
    recent = read_fhir_bundle(path)
    everything = read_fhir_bundle(path, history=True)
    assert len(everything.labs) == len(recent.labs) + 1
    assert {"Essential hypertension", "Diabetes mellitus without complication"} <= {
        k for k, v in everything.labels.items() if v}


def test_duplicate_patient_ids_get_distinct_folders(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.json", "b.json"):
        (root / name).write_text(json.dumps(synthea_bundle()))
    summary = import_fhir(root, tmp_path / "out", progress=False)
    assert summary.patients == [SYNTHEA, f"{SYNTHEA}-2"]
    assert json.loads((tmp_path / "out" / f"{SYNTHEA}-2" / "patient.json").read_text())["patient_id"] == f"{SYNTHEA}-2"
    assert any("already imported" in p.message for p in summary.problems)


def test_workers_give_the_same_bundles(tmp_path: Path, imported) -> None:
    root, out, summary = imported
    parallel = import_fhir(root, tmp_path / "out", workers=2, progress=False)
    assert parallel.patients == summary.patients and parallel.counts == summary.counts
    for patient in summary.patients:
        assert (tmp_path / "out" / patient / "patient.json").read_text() == (out / patient / "patient.json").read_text()


def test_cli_import_fhir(tmp_path: Path, imported, capsys) -> None:
    root, _, _ = imported
    # exit 1: two files are not Bundles (errors), but every readable patient is written
    assert main(["import", "fhir", "--root", str(root), "--out", str(tmp_path / "b"), "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "3 patients from 5 FHIR files" in printed and "resource types not used" in printed
    assert (tmp_path / "b" / SYNTHEA / "labs.csv").is_file()
    assert main(["import", "fhir", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "c")]) == 2
    assert main(["import", "fhir", "--root", str(root), "--out", str(tmp_path / "d"), "--unit", "admission"]) == 2


def test_snomed_table_names_only_benchmark_phenotypes() -> None:
    from medfuse_core.sources.fhir import SNOMED_PHENOTYPES

    named = {group for groups in SNOMED_PHENOTYPES.values() for group in groups}
    assert named <= set(benchmark_phenotypes()) and len(named) == 18


def test_mutated_bundles_never_crash_the_reader(tmp_path: Path) -> None:
    """Fields removed or replaced by values of the wrong type: problems, never an exception or a reader bug."""
    import random

    rng = random.Random(7)
    junk = [None, "", "x", 0, -1.5, True, [], {}, [{}], {"coding": "no"}, {"value": "abc"}, "2021-13-45"]
    base = synthea_bundle()
    for trial in range(60):
        data = json.loads(json.dumps(base))
        for _ in range(3):
            resource = rng.choice(data["entry"])["resource"]
            key = rng.choice(sorted(resource))
            if key == "resourceType":
                continue
            if rng.random() < 0.3:
                del resource[key]
            else:
                target = resource[key]
                if isinstance(target, dict) and target and rng.random() < 0.5:
                    target[rng.choice(sorted(target))] = rng.choice(junk)
                else:
                    resource[key] = rng.choice(junk)
        path = tmp_path / f"m{trial}.json"
        path.write_text(json.dumps(data))
        patient = read_fhir_bundle(path)
        assert not any("could not be read" in p.message for p in patient.problems), patient.problems
        assert patient.patient_id


def test_a_bundle_of_two_patients_imports_only_the_first_and_says_so(tmp_path: Path) -> None:
    data = synthea_bundle()
    second = json.loads(json.dumps(malformed_bundle()))
    data["entry"] += [e for e in second["entry"] if e["resource"]["id"] != "bad-obs"]
    path = tmp_path / "two.json"
    path.write_text(json.dumps(data))
    patient = read_fhir_bundle(path)
    assert patient.patient_id == SYNTHEA and [row[-1] for row in patient.labs] == ["2339-0", "2160-0", "2524-7", "6690-2"]
    assert patient.labels["Septicemia (except in labor)"] == 0  # the other patient's sepsis is not hers
    # his encounter, sodium, imaging study and sepsis
    assert patient.counts["resources of another patient in the Bundle"] == 4
    assert patient.counts["outside the index encounter"] == 1  # only her own 2015 glucose
    assert any("only the first" in p.message for p in patient.problems)
