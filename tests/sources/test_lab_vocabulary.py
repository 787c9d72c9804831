"""The LOINC-keyed lab vocabulary, unit conversion and the bundle time rule, on real-shaped bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfuse_core.features.labs import LabVocabulary, lab_features
from medfuse_core.sources.bundle import read_bundle
from medfuse_core.sources.lab_vocabulary import lab_tests, loinc_code, match_test, name_key
from medfuse_core.sources.labs import labs_from_table
from medfuse_core.sources.units import UnitProblem, conversion, to_ucum
from medfuse_core.sources.vitals import vitals_from_table

REPO = Path(__file__).resolve().parents[2]
REAL_SHAPE = REPO / "tests" / "data" / "real_shape"
DEMO_CONFIG = REPO / "assets" / "demo_model" / "config.json"


def demo_vocabulary() -> LabVocabulary:
    return LabVocabulary.from_dict(json.loads(DEMO_CONFIG.read_text())["features"]["lab_vocabulary"])


def table(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=str).fillna("")


# ------------------------------------------------------------------------------------ the table


def test_vocabulary_is_the_demo_models_lab_vocabulary() -> None:
    """Every item the demo checkpoint reads is in the file, under its key, name and unit, and nothing else."""
    model = {s.key: s for s in demo_vocabulary().items}
    tests = {t.key: t for t in lab_tests()}
    assert set(tests) == set(model)
    for key, stats in model.items():
        assert (tests[key].name, tests[key].unit) == (stats.name, stats.unit)
        assert tests[key].mimic3_itemids == (tests[key].itemid,)


def test_plausible_ranges_hold_the_models_reference_ranges() -> None:
    for stats in demo_vocabulary().items:
        test = match_test("", int(stats.key.split(":")[1]), "")
        for limit in (stats.ref_low, stats.ref_high, stats.denormalise(np.array(0.0))):
            assert test.plausible(float(limit)), (stats.name, limit)


def test_mimic3_loinc_codes_are_listed_and_mimic4_ids_carry_the_same_label(shared_data: Path) -> None:
    d3 = pd.read_csv(shared_data / "mimic-iii-demo" / "D_LABITEMS.csv.gz", dtype=str)
    d3.columns = d3.columns.str.lower()
    by_id3 = d3.set_index("itemid")
    d4 = pd.read_csv(shared_data / "mimic-iv-demo" / "hosp" / "d_labitems.csv.gz", dtype=str).set_index("itemid")
    for test in lab_tests():
        row = by_id3.loc[str(test.itemid)]
        assert row["label"] == test.name and row["loinc_code"] in test.loinc
        for itemid in test.mimic4_itemids:
            assert (d4.loc[str(itemid), "label"], d4.loc[str(itemid), "fluid"]) == (test.name, "Blood")


@pytest.mark.parametrize("loinc, itemid, name, key", [
    ("", None, "BUN", "itemid:51006"),
    ("", None, "Hgb", "itemid:51222"),
    ("", None, "Hct", "itemid:51221"),
    ("", None, "WBC x 1000", "itemid:51301"),
    ("", None, "platelets x 1000", "itemid:51265"),
    ("", None, "calcium", "itemid:50893"),
    ("", None, "Urea nitrogen [Mass/volume] in Blood", "itemid:51006"),
    ("", None, "  GLUCOSE [mass/volume] in serum or plasma ", "itemid:50931"),
    ("", None, "wbc-x-1000", "itemid:51301"),
    ("2339-0", None, "", "itemid:50931"),
    ("", 50912, "Glucose", "itemid:50912"),  # an item id wins over the name
    ("", 99999, "Glucose", None),  # an id the vocabulary lacks is not guessed from the name
    ("2093-3", None, "Glucose", None),  # a LOINC code of another test is not guessed from the name either
    ("", None, "bedside glucose", None),
])
def test_matching(loinc: str, itemid: int | None, name: str, key: str | None) -> None:
    test = match_test(loinc, itemid, name)
    assert (test.key if test else None) == key


@pytest.mark.parametrize("text, code", [
    ("2345-7", "2345-7"), ("http://loinc.org|2345-7", "2345-7"), ("LOINC:2345-7", "2345-7"),
    ("loinc/2345-7", "2345-7"), ("LN 2345-7", "2345-7"), ("50912", None), ("2345", None), ("SNOMED:2345-7", None),
])
def test_loinc_codes_with_or_without_their_system(text: str, code: str | None) -> None:
    assert loinc_code(text) == code


def test_name_keys_ignore_case_spacing_and_punctuation() -> None:
    assert name_key("WBC x 1000") == name_key("wbc_x-1000") == "wbc x 1000"


# ------------------------------------------------------------------------------------ units


@pytest.mark.parametrize("given, expected", [
    ("K/uL", "10*3/uL"), ("K/mcL", "10*3/uL"), ("x10^3/µL", "10*3/uL"), ("10*3/uL", "10*3/uL"),
    ("x10^9/L", "10*9/L"), ("mEq/L", "meq/L"), ("mmol/l", "mmol/L"), ("°F", "[degF]"), ("mm Hg", "mm[Hg]"),
    ("furlongs", None), ("", ""),
])
def test_clinical_unit_spellings(given: str, expected: str | None) -> None:
    assert to_ucum(given) == expected


@pytest.mark.parametrize("given, model, molar_mass, valence, scale", [
    ("mmol/L", "mg/dL", 180.156, None, 18.0156),  # glucose
    ("umol/L", "mg/dL", 113.12, None, 0.011312),  # creatinine
    ("mmol/L", "mg/dL", 28.014, None, 2.8014),  # urea (mmol/L) -> urea nitrogen (mg/dL)
    ("mmol/L", "mg/dL", 40.078, 2, 4.0078),  # calcium
    ("meq/L", "mg/dL", 40.078, 2, 2.0039),  # calcium: 1 mEq = 0.5 mmol
    ("10*9/L", "10*3/uL", None, None, 1.0),
    ("/uL", "10*3/uL", None, None, 0.001),
    ("1", "%", None, None, 100.0),  # haematocrit as a fraction
    ("g/L", "g/dL", None, None, 0.1),
])
def test_conversion_factors(given: str, model: str, molar_mass, valence, scale: float) -> None:
    assert conversion(given, model, molar_mass, valence).scale == pytest.approx(scale)


def test_mass_to_count_is_incompatible() -> None:
    with pytest.raises(UnitProblem) as caught:
        conversion("mg/dL", "10*3/uL")
    assert caught.value.kind == "incompatible"


def test_glucose_in_mmol_per_litre_is_read_in_mg_per_decilitre() -> None:
    raw = table([{"time": "2131-05-07 09:00", "item": "Glucose", "value": "3.65", "unit": "mmol/L",
                  "ref_low": "3.9", "ref_high": "5.5"}])
    labs, problems = labs_from_table(raw, "P1/labs.csv")
    row = labs.table.iloc[0]
    assert problems == []
    assert row["value"] == pytest.approx(3.65 * 18.0156) and row["value_unit"] == "mg/dL"
    assert (row["value_text"], row["unit"]) == ("3.65", "mmol/L")  # the original is kept beside it
    assert row["ref_low"] == pytest.approx(3.9 * 18.0156)
    tokens = lab_features(labs, pd.Timestamp("2131-05-07 08:00"), demo_vocabulary())
    glucose = demo_vocabulary().items[tokens.item_ids[0] - 1]
    assert glucose.key == "itemid:50931"
    assert tokens.values[0, 0] == pytest.approx(glucose.normalise(np.array([3.65 * 18.0156]))[()], abs=1e-5)


def test_hba1c_in_ifcc_mmol_per_mol_is_read_as_ngsp_percent() -> None:
    raw = table([{"time": "2131-05-07 09:00", "item": "HbA1c", "value": "93", "unit": "mmol/mol"}])
    labs, problems = labs_from_table(raw, "P1/labs.csv")
    assert problems == [] and labs.table.loc[0, "value"] == pytest.approx(0.09148 * 93 + 2.152)  # 10.66 %
    assert labs.table.loc[0, "value_unit"] == "%"


def test_incompatible_unit_is_refused_with_file_field_and_expected_unit() -> None:
    raw = table([{"time": "2131-05-07 09:00", "item": "WBC x 1000", "value": "8.1", "unit": "mg/dL"}])
    labs, problems = labs_from_table(raw, "P1/labs.csv")
    assert labs.table.loc[0, "not_used"] == "unit incompatible" and np.isnan(labs.table.loc[0, "value"])
    [p] = problems
    assert (p.file, p.field) == ("P1/labs.csv", "White Blood Cells: unit")
    assert p.message.startswith("expected a unit convertible to K/uL; found 'mg/dL' in 1 row")
    assert lab_features(labs, None, demo_vocabulary()).item_ids.size == 0


def test_loinc_column_is_read_and_checked() -> None:
    raw = table([{"time": "2131-05-07 09:00", "loinc": "2160-0", "item": "Kreatinin", "value": "88", "unit": "umol/L"},
                 {"time": "2131-05-07 09:00", "loinc": "not-a-code", "item": "Sodium", "value": "140", "unit": "mmol/L"}])
    labs, problems = labs_from_table(raw, "P1/labs.csv")
    t = labs.table
    assert t["itemid"].tolist() == [50912, 50983] and t["loinc"].tolist() == ["2160-0", "2951-2"]
    assert t.loc[0, "value"] == pytest.approx(88 * 0.011312)
    assert [p.field for p in problems] == ["row 2: loinc"]


def test_text_results_and_unitless_ions_need_no_unit() -> None:
    raw = table([{"time": "2131-05-07 09:00", "item": "Sodium", "value": "140", "unit": ""},
                 {"time": "2131-05-07 09:00", "item": "pH", "value": "7.31", "unit": ""},
                 {"time": "2131-05-07 09:00", "item": "Glucose", "value": "HEMOLYZED", "unit": ""}])
    labs, problems = labs_from_table(raw, "P1/labs.csv")
    assert problems == []
    assert labs.table["not_used"].tolist() == ["", "", "no number"]


# ------------------------------------------------------------------------------------ vitals units


def test_vitals_unit_column_converts_to_the_channel_unit() -> None:
    raw = table([{"time": "2131-05-07 09:00", "channel": "Temperature", "value": "101.3", "unit": "°F"},
                 {"time": "2131-05-07 09:00", "channel": "Temperature", "value": "38.1", "unit": "Cel"},
                 {"time": "2131-05-07 09:00", "channel": "Fraction inspired oxygen", "value": "40", "unit": "%"},
                 {"time": "2131-05-07 09:00", "channel": "Fraction inspired oxygen", "value": "0.6", "unit": ""},
                 {"time": "2131-05-07 09:00", "channel": "Weight", "value": "180", "unit": "lb"},
                 {"time": "2131-05-07 09:00", "channel": "Glucose", "value": "7", "unit": "mmol/L"},
                 {"time": "2131-05-07 09:00", "channel": "Heart Rate", "value": "80", "unit": "mg"}])
    vitals, problems = vitals_from_table(raw, "P1/vitals.csv")
    t = vitals.table
    assert t["value"].tolist()[:6] == pytest.approx([38.5, 38.1, 0.4, 0.6, 81.6466266, 7 * 18.0156])
    assert np.isnan(t["value"].iloc[6]) and t["not_used"].tolist() == [""] * 6 + ["unit incompatible"]
    [p] = problems
    assert (p.file, p.field) == ("P1/vitals.csv", "Heart Rate: unit") and "expected a unit convertible to /min" in p.message


# ------------------------------------------------------------------------------------ real-shaped bundles


def test_eicu_stay_reads_every_test_the_model_knows() -> None:
    record = read_bundle(REAL_SHAPE / "eicu_stay")
    assert record.problems == []
    t = record.labs.table
    known = t[t["itemid"].notna()]
    assert set(known["item"]) == {"sodium", "potassium", "chloride", "bicarbonate", "BUN", "creatinine", "glucose",
                                  "anion gap", "calcium", "Hgb", "Hct", "WBC x 1000", "platelets x 1000", "magnesium",
                                  "phosphate", "albumin", "lactate", "pH", "HCO3"}
    assert (known["not_used"] == "").all()
    assert str(t["time"].iloc[0]) == "2014-03-02 06:20:00"  # offset_minutes -220 from the index time
    tokens = lab_features(record.labs, record.index_time, demo_vocabulary())
    assert len(tokens) == 18 and "bedside glucose" in tokens.unknown
    temperature = record.vitals.table.set_index("value_text").loc["101.3"]
    assert temperature["value"] == pytest.approx(38.5) and temperature["unit"] == "°F"


def test_synthea_patient_reads_loinc_coded_labs_on_one_clock() -> None:
    record = read_bundle(REAL_SHAPE / "synthea_patient")
    assert [p.severity.value for p in record.problems] == ["info", "info"]
    t = record.labs.table
    assert str(record.index_time) == "2023-01-10 08:00:00"
    assert set(t["time"].astype(str)) == {"2023-01-10 08:30:00"}  # 13:30Z on the index time's -05:00 clock
    assert record.notes[0].time == record.index_time  # 13:00Z is the admission moment
    glucose = t.set_index("loinc").loc["2339-0"]
    assert glucose["value"] == pytest.approx(3.65 * 18.0156) and glucose["itemid"] == 50931
    assert t.set_index("loinc").loc["4548-4", "value"] == 10.7
    tokens = lab_features(record.labs, record.index_time, demo_vocabulary())
    assert len(tokens) == 14


def test_times_follow_the_index_times_clock_in_every_file(tmp_path: Path) -> None:
    bundle = tmp_path / "P1"
    shutil.copytree(REAL_SHAPE / "synthea_patient", bundle)
    (bundle / "notes" / "index.csv").write_text("file,time,category\nnote_00.txt,2023-01-10T14:00:00+01:00,Physician\n")
    record = read_bundle(bundle)
    assert str(record.notes[0].time) == "2023-01-10 08:00:00"  # 13:00Z, on the -05:00 clock


def test_offset_without_an_index_time_offset_is_kept_as_wall_clock_with_a_warning(tmp_path: Path) -> None:
    bundle = tmp_path / "P1"
    bundle.mkdir()
    (bundle / "patient.json").write_text(json.dumps({"patient_id": "P1", "index_time": "2023-01-10 08:00"}))
    (bundle / "notes").mkdir()
    (bundle / "notes" / "note_00.txt").write_text("Seen.")
    (bundle / "notes" / "index.csv").write_text("file,time,category\nnote_00.txt,2023-01-10T09:00:00Z,Nursing\n")
    record = read_bundle(bundle)
    assert str(record.notes[0].time) == "2023-01-10 09:00:00"
    [p] = record.problems
    assert p.field == "row 1: time" and "carries a UTC offset but patient.json's index_time has none" in p.message


def test_relative_times_need_an_index_time(tmp_path: Path) -> None:
    bundle = tmp_path / "P1"
    bundle.mkdir()
    (bundle / "patient.json").write_text(json.dumps({"patient_id": "P1"}))
    (bundle / "labs.csv").write_text("offset_hours,item,value,unit\n1.5,Sodium,140,mmol/L\n")
    record = read_bundle(bundle)
    assert not record.labs.present
    assert any(p.field == "offset_hours" and "expected an index_time" in p.message for p in record.problems)
