"""vitals.csv -> Vitals: mimic3-benchmarks channel names, categorical maps, unit cleaning, outliers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfuse_core.problems import DataError, Severity
from medfuse_core.record import VITAL_COLUMNS
from medfuse_core.sources.vital_channels import CHANNEL_NAMES
from medfuse_core.sources.vitals import canonical_channel, vitals_from_table

FILE = "bundle/vitals.csv"
T0 = "2131-05-07 14:00"



def used(vitals) -> pd.DataFrame:
    """The rows the model may read (outliers and unconvertible units are kept for display, marked)."""
    return vitals.table[vitals.table["not_used"] == ""]

def table(rows: list[tuple[str, str, str]], columns: tuple[str, ...] = ("time", "channel", "value")) -> pd.DataFrame:
    """An all-string table as `pd.read_csv(..., dtype=str, keep_default_na=False)` gives it."""
    return pd.DataFrame(rows, columns=list(columns), dtype=str)


def one(channel: str, *values: str) -> pd.DataFrame:
    return table([(T0, channel, v) for v in values])


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def only_problem(problems):
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# ---------------------------------------------------------------------------------------------
# Channel names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written, name",
    [
        ("Heart Rate", "Heart Rate"),
        ("Heart rate", "Heart Rate"),  # variable_ranges.csv spelling
        ("  heart_rate ", "Heart Rate"),
        ("HR", "Heart Rate"),
        ("SpO2", "Oxygen saturation"),
        ("FiO2", "Fraction inspired oxygen"),
        ("PH", "pH"),
        ("Glasgow coma scale total", "Glascow coma scale total"),
        ("GCS eye", "Glascow coma scale eye opening"),
        ("capillary refill", "Capillary refill rate"),
    ],
)
def test_channel_names_match_ignoring_case_and_spelling(written: str, name: str) -> None:
    assert canonical_channel(written) == name


def test_every_benchmark_channel_matches_itself() -> None:
    assert all(canonical_channel(n) == n and canonical_channel(n.upper()) == n for n in CHANNEL_NAMES)
    assert canonical_channel("Blood culture") is None


def test_channels_are_stored_under_the_benchmark_name() -> None:
    vitals, problems = vitals_from_table(table([(T0, "heart rate", "80"), (T0, "RESPIRATORY RATE", "18")]), FILE)
    assert problems == []
    assert list(vitals.table["channel"]) == ["Heart Rate", "Respiratory rate"]
    assert tuple(vitals.table.columns) == VITAL_COLUMNS
    assert str(vitals.table["time"].dtype) == "datetime64[ns]"


def test_unknown_channel_is_kept_with_one_warning_per_name() -> None:
    raw = table(
        [(T0, "Urine output", "300"), (T0, "Urine output", "250"), (T0, "Pain score", "high"), (T0, "HR", "80")]
    )
    vitals, problems = vitals_from_table(raw, FILE)
    assert list(vitals.table["channel"]) == ["Urine output", "Urine output", "Pain score", "Heart Rate"]
    assert vitals.table["value"].tolist()[:2] == [300.0, 250.0]
    assert math.isnan(vitals.table.loc[2, "value"]) and vitals.table.loc[2, "value_text"] == "high"
    assert [(p.severity, p.file, p.field) for p in problems] == [(Severity.WARNING, FILE, "channel")] * 2
    assert problems[0].message.startswith("unknown channel 'Urine output' (2 rows): kept for display, not used")
    assert "Capillary refill rate, Diastolic blood pressure" in problems[0].message
    assert problems[1].message.startswith("unknown channel 'Pain score' (1 row)")


# ---------------------------------------------------------------------------------------------
# Categorical channels
# ---------------------------------------------------------------------------------------------


def test_gcs_text_is_mapped_to_the_score_and_kept() -> None:
    raw = table(
        [
            (T0, "Glascow coma scale eye opening", "4 Spontaneously"),
            (T0, "Glascow coma scale eye opening", "to pain"),
            (T0, "Glascow coma scale eye opening", "None"),
            (T0, "Glascow coma scale motor response", " 6  Obeys Commands "),
            (T0, "Glascow coma scale verbal response", "1.0 ET/Trach"),
            (T0, "Glascow coma scale total", "15"),
            (T0, "Glascow coma scale total", "7.0"),
            (T0, "Glascow coma scale eye opening", "3"),  # a bare score
        ]
    )
    vitals, problems = vitals_from_table(raw, FILE)
    assert problems == []
    assert vitals.table["value"].tolist() == [4.0, 2.0, 0.0, 6.0, 1.0, 15.0, 7.0, 3.0]
    assert vitals.table.loc[3, "value_text"] == " 6  Obeys Commands "


def test_capillary_refill_accepts_benchmark_map_and_chartevents_text() -> None:
    vitals, problems = vitals_from_table(
        one("Capillary refill rate", "0.0", "1.0", "Normal <3 secs", "Brisk", "Abnormal >3 secs", "delayed"), FILE
    )
    assert problems == []
    assert vitals.table["value"].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_unknown_category_text_is_nan_with_one_warning() -> None:
    raw = one("Glascow coma scale eye opening", "eyes closed", "4 Spontaneously", "eyes closed", "7")
    vitals, problems = vitals_from_table(raw, FILE)
    assert len(vitals.table) == 4
    assert vitals.table["value"].isna().tolist() == [True, False, True, True]
    assert vitals.table["value_text"].tolist()[0] == "eyes closed"
    p = only_problem(problems)
    assert (p.severity, p.file, p.field) == (Severity.WARNING, FILE, "Glascow coma scale eye opening: value")
    assert p.message.startswith("unknown category in 3 rows: 'eyes closed' (2), '7' (1); expected one of 'None',")
    assert p.message.endswith("(or the score); kept with no value")


# ---------------------------------------------------------------------------------------------
# Numeric channels: mimic3-benchmarks unit cleaning
# ---------------------------------------------------------------------------------------------


def test_temperature_in_fahrenheit_is_converted() -> None:
    vitals, problems = vitals_from_table(one("Temperature", "98.6", "37.2", "79", "101.3"), FILE)
    assert problems == []
    assert vitals.table["value"].tolist() == pytest.approx([37.0, 37.2, 26.111111, 38.5])
    assert vitals.table["value_text"].tolist() == ["98.6", "37.2", "79", "101.3"]


def test_temperature_just_below_the_fahrenheit_cut_is_an_outlier() -> None:
    vitals, problems = vitals_from_table(one("Temperature", "78.9", "36"), FILE)
    assert used(vitals)["value"].tolist() == [36.0]
    assert vitals.table["not_used"].tolist() == ["implausible", ""] and np.isnan(vitals.table["value"].iloc[0])
    p = only_problem(problems)
    assert p.field == "Temperature: value"
    assert p.message == (
        "1 row not used by the model: a value outside the plausible range 14.2 to 47: 78.9; "
        "values between that and the valid range 26 to 45 are clipped to it"
    )


def test_fio2_percent_becomes_fraction() -> None:
    vitals, problems = vitals_from_table(one("Fraction inspired oxygen", "50", "1.0", "0.4", "100"), FILE)
    assert problems == []
    assert vitals.table["value"].tolist() == pytest.approx([0.5, 1.0, 0.4, 1.0])


def test_oxygen_saturation_fraction_becomes_percent() -> None:
    vitals, problems = vitals_from_table(one("Oxygen saturation", "0.95", "97"), FILE)
    assert problems == []
    assert vitals.table["value"].tolist() == pytest.approx([95.0, 97.0])


def test_blood_pressure_pairs_are_split() -> None:
    raw = table([(T0, "Systolic blood pressure", "120/80"), (T0, "Diastolic blood pressure", "120 / 80"),
                 (T0, "Systolic blood pressure", "110")])
    vitals, problems = vitals_from_table(raw, FILE)
    assert problems == []
    assert vitals.table["value"].tolist() == [120.0, 80.0, 110.0]


def test_weight_and_height_are_taken_as_given() -> None:
    raw = table([(T0, "Weight", "81.5"), (T0, "Height", "172")])
    vitals, problems = vitals_from_table(raw, FILE)
    assert problems == [] and vitals.table["value"].tolist() == [81.5, 172.0]


def test_non_numeric_value_is_kept_as_nan_with_one_warning() -> None:
    vitals, problems = vitals_from_table(one("Glucose", "ERROR", "128", "", "ERROR", "inf"), FILE)
    assert len(vitals.table) == 5
    assert vitals.table["value"].isna().tolist() == [True, False, True, True, True]
    p = only_problem(problems)
    assert (p.file, p.field) == (FILE, "Glucose: value")
    assert p.message == "no number in 4 rows: 'ERROR' (2), '' (1), 'inf' (1); kept with no value"


# ---------------------------------------------------------------------------------------------
# Outliers (mimic3-benchmarks remove_outliers_for_variable)
# ---------------------------------------------------------------------------------------------


def test_outliers_dropped_and_near_limits_clipped() -> None:
    # Heart Rate: outlier 0..390, valid 0..350
    raw = one("Heart Rate", "80", "400", "360", "390", "-5", "1000")
    vitals, problems = vitals_from_table(raw, FILE)
    assert used(vitals)["value"].tolist() == [80.0, 350.0, 350.0]
    assert used(vitals)["value_text"].tolist() == ["80", "360", "390"]
    assert vitals.table.loc[vitals.table["not_used"] == "implausible", "value_text"].tolist() == ["400", "-5", "1000"]
    p = only_problem(problems)
    assert (p.severity, p.file, p.field) == (Severity.WARNING, FILE, "Heart Rate: value")
    assert p.message == (
        "3 rows not used by the model: a value outside the plausible range 0 to 390: 400, -5, 1000; "
        "values between that and the valid range 0 to 350 are clipped to it"
    )


def test_outlier_message_shows_converted_value_and_text() -> None:
    vitals, problems = vitals_from_table(one("Fraction inspired oxygen", "15", "0.21"), FILE)
    assert used(vitals)["value"].tolist() == [0.21]
    assert "0.15 (from '15')" in only_problem(problems).message


def test_clip_to_valid_low() -> None:
    # Glucose: outlier 0..2200, valid 33..2000
    vitals, problems = vitals_from_table(one("Glucose", "20", "2100"), FILE)
    assert problems == [] and vitals.table["value"].tolist() == [33.0, 2000.0]


def test_one_outlier_warning_per_channel() -> None:
    raw = table([(T0, "Heart Rate", "999")] * 500 + [(T0, "Respiratory rate", "400")] * 3)
    vitals, problems = vitals_from_table(raw, FILE)
    assert len(used(vitals)) == 0 and len(vitals.table) == 503
    assert [p.field for p in problems] == ["Heart Rate: value", "Respiratory rate: value"]
    assert problems[0].message.startswith("500 rows not used by the model: a value outside the plausible range 0 to 390: "
                                          "999,")
    assert ", ...;" in problems[0].message


# ---------------------------------------------------------------------------------------------
# Malformed tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns, missing", [(("channel", "value"), "time"), (("time", "value"), "channel"), (("time", "channel"), "value")]
)
def test_missing_required_column_raises(columns: tuple[str, ...], missing: str) -> None:
    with pytest.raises(DataError) as caught:
        vitals_from_table(table([tuple("x" for _ in columns)], columns=columns), FILE)
    p = caught.value.problem
    assert (p.severity, p.file, p.field) == (Severity.ERROR, FILE, missing)
    assert p.message == f"expected columns time, channel and value; found {', '.join(columns)}"


def test_garbage_time_drops_the_row() -> None:
    raw = table([("not a time", "Heart Rate", "80"), (T0, "Heart Rate", "81"), ("", "Heart Rate", "82")])
    vitals, problems = vitals_from_table(raw, FILE)
    assert vitals.table["value"].tolist() == [81.0]
    assert [(p.file, p.field) for p in problems] == [(FILE, "row 1: time"), (FILE, "row 3: time")]
    assert problems[0].message == "expected an ISO date-time like 2131-05-07 14:00; found 'not a time'; row dropped"


def test_empty_channel_drops_the_row() -> None:
    vitals, problems = vitals_from_table(table([(T0, "  ", "80"), (T0, "HR", "81")]), FILE)
    assert vitals.table["value"].tolist() == [81.0]
    p = only_problem(problems)
    assert p.field == "row 1: channel"
    assert p.message == "expected a channel name like Heart Rate; found '  '; row dropped"


def test_sorted_by_time_stably() -> None:
    raw = table([("2131-05-07 15:00", "HR", "90"), (T0, "HR", "80"), (T0, "Respiratory rate", "18"),
                 ("2131-05-07 13:00", "pH", "7.4")])
    vitals, _ = vitals_from_table(raw, FILE)
    assert vitals.table["channel"].tolist() == ["pH", "Heart Rate", "Respiratory rate", "Heart Rate"]
    assert vitals.table["time"].is_monotonic_increasing


def test_empty_table_gives_empty_vitals() -> None:
    vitals, problems = vitals_from_table(pd.DataFrame(), FILE)
    assert problems == [] and not vitals.present and tuple(vitals.table.columns) == VITAL_COLUMNS


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "vitals.csv"
    path.write_text("time,channel,value\n")
    vitals, problems = vitals_from_table(read(path), str(path))
    assert problems == [] and len(vitals.table) == 0
    assert tuple(vitals.table.columns) == VITAL_COLUMNS


def test_bom_upper_case_header_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "vitals.csv"
    content = "\ufeffTime, Channel ,VALUE,unit,note\n2131-05-07 14:00,Heart Rate,80,bpm,ok\n"
    path.write_bytes(content.encode("utf-8"))
    vitals, problems = vitals_from_table(read(path), str(path))
    assert problems == []
    assert tuple(vitals.table.columns) == VITAL_COLUMNS
    assert vitals.table.loc[0, ["channel", "value", "value_text"]].tolist() == ["Heart Rate", 80.0, "80"]
