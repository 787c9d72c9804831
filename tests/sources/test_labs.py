"""labs.csv -> Labs: value parsing, malformed input, and the real MIMIC-III demo LABEVENTS."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfuse_core.problems import DataError, Severity
from medfuse_core.record import LAB_COLUMNS
from medfuse_core.sources.cell_text import MAX_ROW_WARNINGS
from medfuse_core.sources.labs import (
    ParsedLabValue,
    labs_from_table,
    parse_lab_value,
    parse_lab_values,
)

FILE = "bundle/labs.csv"
TIME_HINT = "an ISO date-time like 2131-05-07 14:00"


def table(rows: list[dict[str, str]], columns: list[str] | None = None) -> pd.DataFrame:
    """An all-string table as `pd.read_csv(..., dtype=str, keep_default_na=False)` gives it."""
    frame = pd.DataFrame(rows, columns=columns, dtype=str)
    return frame.fillna("")


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def row(time: str = "2131-05-07 14:00", item: str = "Creatinine", value: str = "1.2", **extra: str) -> dict:
    return {"time": time, "item": item, "value": value, "unit": "mg/dL", **extra}  # Creatinine's unit by default


# ---------------------------------------------------------------------------------------------
# parse_lab_value
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value, censored",
    [
        ("1.2", 1.2, ""),
        (" 7.40 ", 7.4, ""),
        ("-3", -3.0, ""),  # base excess is negative in MIMIC
        (".5", 0.5, ""),
        ("5.", 5.0, ""),
        ("<0.5", 0.5, "below"),
        ("<=0.5", 0.5, "below"),
        ("< 0.5", 0.5, "below"),
        ("≤2", 2.0, "below"),
        (">1000", 1000.0, "above"),
        (">=1.035", 1.035, "above"),
        ("GREATER THAN 1000", 1000.0, "above"),
        ("greater than 30", 30.0, "above"),
        ("LESS THAN 10", 10.0, "below"),
        ("LESS THAN OR EQUAL TO 5", 5.0, "below"),
        ("1,234", 1234.0, ""),
        ("12,345.5", 12345.5, ""),
        ("1.2e3", 1200.0, ""),
        ("1.2E-3", 0.0012, ""),
    ],
)
def test_parse_lab_value_numbers(text: str, value: float, censored: str) -> None:
    parsed = parse_lab_value(text)
    assert parsed.value == pytest.approx(value)
    assert parsed.censored == censored


@pytest.mark.parametrize(
    "text",
    [
        "NEG", "HEMOLYZED", "NONE", "", "   ", "10-20", "0-2", "+1", "1+", "2+", "TR", "inf", "-inf", "nan",
        "NaN", "1E999", "1,2", "18/", "/22", "-", ".", "GREATER THAN 20 NG/ML", "POSITIVE,TITER IS >450 MIU/ML",
    ],
)
def test_parse_lab_value_without_number_is_nan(text: str) -> None:
    parsed = parse_lab_value(text)
    assert math.isnan(parsed.value)
    assert parsed.censored == ""


def test_parse_lab_value_accepts_numbers_and_none() -> None:
    assert parse_lab_value(3) == ParsedLabValue(3.0, "")
    assert parse_lab_value(7.4) == ParsedLabValue(7.4, "")
    assert math.isnan(parse_lab_value(None).value)
    assert math.isnan(parse_lab_value(float("nan")).value)
    assert math.isnan(parse_lab_value(float("inf")).value)


def test_vectorised_parse_matches_scalar_parse() -> None:
    texts = pd.Series(["1.2", "<0.5", "NEG", "1,234", ">1000", "", "1+", "1.2e3", "<0.5"], index=range(10, 19))
    parsed = parse_lab_values(texts)
    assert list(parsed.index) == list(texts.index)
    for position, text in enumerate(texts):
        one = parse_lab_value(text)
        got = parsed.iloc[position]
        assert (math.isnan(one.value) and math.isnan(got["value"])) or one.value == got["value"]
        assert one.censored == got["censored"]


# ---------------------------------------------------------------------------------------------
# labs_from_table: well-formed input
# ---------------------------------------------------------------------------------------------


def test_well_formed_table_gives_contract_columns_and_keeps_text() -> None:
    raw = table(
        [
            row("2131-05-07 14:00", "Creatinine", " 1.2 ", unit="mg/dL", ref_low="0.5", ref_high="1.2",
                flag="abnormal"),
            row("2131-05-07 13:00", "Urine protein", "NEG", unit=""),
            row("2131-05-07 13:30", "Troponin T", "<0.01", unit="ng/mL"),
        ]
    )
    labs, problems = labs_from_table(raw, FILE)
    assert problems == []
    t = labs.table
    assert tuple(t.columns) == LAB_COLUMNS
    assert str(t["time"].dtype) == "datetime64[ns]"
    assert list(t["item"]) == ["Urine protein", "Troponin T", "Creatinine"]  # sorted by time
    assert math.isnan(t.loc[0, "value"]) and t.loc[0, "value_text"] == "NEG"
    assert t.loc[1, "value"] == 0.01 and t.loc[1, "censored"] == "below"
    creat = t.loc[2]
    assert creat["value"] == 1.2 and creat["value_text"] == " 1.2 "  # raw text kept as given
    assert (creat["unit"], creat["ref_low"], creat["ref_high"], creat["flag"]) == ("mg/dL", 0.5, 1.2, "abnormal")
    # tests outside the lab vocabulary keep no item id; Creatinine, named only, gets its MIMIC id and LOINC code
    assert t["itemid"].isna().tolist() == [True, True, False] and t.loc[2, "itemid"] == 50912
    assert t["loinc"].tolist() == ["", "", "2160-0"]
    assert t["not_used"].tolist() == ["no number", "", ""]
    assert t["value_unit"].tolist() == ["", "ng/mL", "mg/dL"]


def test_rows_with_equal_times_keep_file_order() -> None:
    raw = table([row("2131-05-07 14:00", f"lab {i}", str(i)) for i in range(6)] + [row("2131-05-07 13:00", "first")])
    labs, _ = labs_from_table(raw, FILE)
    assert list(labs.table["item"]) == ["first"] + [f"lab {i}" for i in range(6)]


def test_itemid_alone_is_enough() -> None:
    raw = table([{"time": "2131-05-07 14:00", "itemid": "50912", "item": "", "value": "1.1", "unit": "mg/dL"}])
    labs, problems = labs_from_table(raw, FILE)
    assert problems == []
    assert labs.table.loc[0, "itemid"] == 50912 and labs.table.loc[0, "item"] == ""


def test_itemid_column_without_item_column() -> None:
    raw = table([{"time": "2131-05-07", "itemid": "50912.0", "value": "1.1", "unit": "mg/dL"}])
    labs, problems = labs_from_table(raw, FILE)
    assert problems == []
    assert str(labs.table["itemid"].dtype) == "Int64" and labs.table.loc[0, "itemid"] == 50912


def test_column_names_ignore_case_whitespace_and_extra_columns() -> None:
    raw = pd.DataFrame(
        {" TIME ": ["2131-05-07 14:00"], "Item": ["Sodium"], "VALUE": ["140"], "Unit ": ["mEq/L"],
         "hadm_id": ["193924"], "comment": ["fine"]},
        dtype=str,
    )
    labs, problems = labs_from_table(raw, FILE)
    assert problems == []
    assert tuple(labs.table.columns) == LAB_COLUMNS
    assert labs.table.loc[0, ["item", "value", "unit"]].tolist() == ["Sodium", 140.0, "mEq/L"]


def test_iso_t_separator_and_date_only_times_parse() -> None:
    raw = table([row("2131-05-07T14:05:30"), row("2131-05-08")])
    labs, problems = labs_from_table(raw, FILE)
    assert problems == []
    assert list(labs.table["time"]) == [pd.Timestamp("2131-05-07 14:05:30"), pd.Timestamp("2131-05-08")]


def test_utc_offset_is_dropped_with_one_warning() -> None:
    raw = table([row("2131-05-07T14:00:00+02:00"), row("2131-05-07T15:00:00Z"), row("2131-05-07 16:00")])
    labs, problems = labs_from_table(raw, FILE)
    assert list(labs.table["time"].dt.hour) == [14, 15, 16]
    assert len(problems) == 1
    assert (problems[0].file, problems[0].field) == (FILE, "time")
    assert "2 times carry a UTC offset" in problems[0].message


# ---------------------------------------------------------------------------------------------
# labs_from_table: malformed input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns, missing",
    [
        (["item", "value"], "time"),
        (["time", "item"], "value"),
        (["time", "value", "unit"], "item"),
    ],
)
def test_missing_required_column_raises_data_error(columns: list[str], missing: str) -> None:
    raw = table([{c: "x" for c in columns}], columns=columns)
    with pytest.raises(DataError) as caught:
        labs_from_table(raw, FILE)
    problem = caught.value.problem
    assert problem.severity is Severity.ERROR
    assert (problem.file, problem.field) == (FILE, missing)
    assert problem.message == f"expected columns time, value and item or itemid; found {', '.join(columns)}"


def test_header_only_with_missing_column_still_raises() -> None:
    with pytest.raises(DataError) as caught:
        labs_from_table(table([], columns=["time", "item"]), FILE)
    assert caught.value.problem.field == "value"


def test_garbage_times_drop_the_row_with_a_warning() -> None:
    raw = table([row("2131-05-07 14:00"), row("yesterday"), row(""), row("2131-13-45 25:00"), row("05/07/2131")])
    labs, problems = labs_from_table(raw, FILE)
    assert len(labs.table) == 1
    assert [p.field for p in problems] == ["row 2: time", "row 3: time", "row 4: time", "row 5: time"]
    first = problems[0]
    assert first.severity is Severity.WARNING and first.file == FILE
    assert first.message == f"expected {TIME_HINT}; found 'yesterday'; row dropped"
    assert "found ''" in problems[1].message


def test_out_of_range_year_is_a_bad_time() -> None:
    labs, problems = labs_from_table(table([row("2500-01-01 00:00")]), FILE)
    assert len(labs.table) == 0
    assert problems[0].field == "row 1: time" and "2500-01-01 00:00" in problems[0].message


def test_many_bad_rows_are_summarised() -> None:
    raw = table([row("bad")] * (MAX_ROW_WARNINGS + 15))
    labs, problems = labs_from_table(raw, FILE)
    assert len(labs.table) == 0
    assert len(problems) == MAX_ROW_WARNINGS + 1
    summary = problems[-1]
    assert summary.field == "15 more rows: time"
    assert summary.message.startswith(f"expected {TIME_HINT}; row dropped in rows 21, 22,")
    assert summary.message.endswith(", ...")


def test_row_without_item_or_itemid_is_dropped() -> None:
    raw = table(
        [
            {"time": "2131-05-07", "item": "", "itemid": "", "value": "1"},
            {"time": "2131-05-07", "item": "  ", "itemid": "abc", "value": "2"},
            {"time": "2131-05-07", "item": "Sodium", "itemid": "", "value": "140"},
        ]
    )
    labs, problems = labs_from_table(raw, FILE)
    assert list(labs.table["value"]) == [140.0]
    assert [(p.file, p.field) for p in problems] == [(FILE, "row 1: item"), (FILE, "row 2: item")]
    assert problems[0].message == "expected an item name or an integer itemid; found ''; row dropped"


def test_bad_itemid_with_a_name_keeps_the_row() -> None:
    raw = table([{"time": "2131-05-07", "item": "Sodium", "itemid": "50983.5", "value": "140"}])
    labs, problems = labs_from_table(raw, FILE)
    # the bad id is left unknown; the name then matches the vocabulary's Sodium, whose MIMIC id the row gets
    assert labs.table.loc[0, "item"] == "Sodium" and labs.table.loc[0, "itemid"] == 50983
    assert [p.field for p in problems] == ["row 1: itemid"]
    assert problems[0].message == ("expected an integer item id like 50912 or a LOINC code like 2345-7; found '50983.5'; "
                                   "item id left unknown")


def test_bad_reference_limits_become_nan_with_warnings() -> None:
    raw = table(
        [
            row(ref_low="low", ref_high="1.2"),
            row(ref_low="0.5", ref_high="1,2 mg"),
            row(ref_low="", ref_high=""),
        ]
    )
    labs, problems = labs_from_table(raw, FILE)
    assert len(labs.table) == 3
    assert math.isnan(labs.table.loc[0, "ref_low"]) and labs.table.loc[0, "ref_high"] == 1.2
    assert math.isnan(labs.table.loc[1, "ref_high"])
    assert [(p.file, p.field) for p in problems] == [(FILE, "row 1: ref_low"), (FILE, "row 2: ref_high")]
    assert problems[0].message == "expected a number like 0.5; found 'low'; limit left unknown"
    assert "found '1,2 mg'" in problems[1].message


def test_reference_low_above_high_is_kept_and_warned() -> None:
    raw = table([row(), row(ref_low="5", ref_high="1.5")])
    labs, problems = labs_from_table(raw, FILE)
    assert labs.table.loc[1, ["ref_low", "ref_high"]].tolist() == [5.0, 1.5]
    assert len(problems) == 1
    assert (problems[0].file, problems[0].field) == (FILE, "row 2: ref_low")
    assert problems[0].message == "expected ref_low <= ref_high; found '5 > 1.5'; both limits kept as given"


def test_non_numeric_values_never_drop_a_row() -> None:
    texts = ["NEG", "HEMOLYZED", "", "10-20", "1+", "See Comments"]
    labs, problems = labs_from_table(table([row(value=t) for t in texts]), FILE)
    assert problems == []
    assert list(labs.table["value_text"]) == texts
    assert labs.table["value"].isna().all()


def test_empty_table_gives_empty_labs_without_problems() -> None:
    labs, problems = labs_from_table(pd.DataFrame(), FILE)
    assert problems == [] and not labs.present
    assert tuple(labs.table.columns) == LAB_COLUMNS


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "labs.csv"
    path.write_text("time,item,value,unit,ref_low,ref_high,flag\n")
    labs, problems = labs_from_table(read(path), str(path))
    assert problems == [] and len(labs.table) == 0
    assert tuple(labs.table.columns) == LAB_COLUMNS
    assert str(labs.table["value"].dtype) == "float64"


def test_bom_in_header(tmp_path: Path) -> None:
    path = tmp_path / "labs.csv"
    path.write_bytes("\ufefftime,item,value\n2131-05-07 14:00,Sodium,140\n".encode("utf-8"))
    labs, problems = labs_from_table(read(path), str(path))
    assert problems == [] and labs.table.loc[0, "value"] == 140.0
    # also when the reader kept the BOM in the column name
    raw = pd.DataFrame({"\ufeffTime": ["2131-05-07"], "item": ["Sodium"], "value": ["141"]}, dtype=str)
    labs, problems = labs_from_table(raw, FILE)
    assert problems == [] and labs.table.loc[0, "value"] == 141.0


def test_duplicate_column_after_normalising_uses_the_first() -> None:
    raw = pd.DataFrame([["2131-05-07", "Sodium", "140", "999"]], columns=["time", "item", "value", "VALUE"], dtype=str)
    labs, problems = labs_from_table(raw, FILE)
    assert labs.table.loc[0, "value"] == 140.0
    expected = [("value", "column 'value' appears more than once; the first is used")]
    assert [(p.field, p.message) for p in problems] == expected


# ---------------------------------------------------------------------------------------------
# Real data: MIMIC-III demo LABEVENTS (third-party partial extract, upper-case headers)
# ---------------------------------------------------------------------------------------------

LABEVENTS_NAME = "LABEVENTS_PARTIAL.csv.gz"
RENAME = {"CHARTTIME": "time", "ITEMID": "itemid", "VALUE": "value", "VALUEUOM": "unit", "FLAG": "flag"}


@pytest.fixture(scope="module")
def demo_labs(shared_data: Path):
    path = shared_data / "mimic-iii-demo" / LABEVENTS_NAME
    raw = read(path).rename(columns=RENAME)
    labs, problems = labs_from_table(raw, LABEVENTS_NAME)
    return raw, labs, problems


def test_demo_labevents_loses_no_row(demo_labs) -> None:
    raw, labs, problems = demo_labs
    t = labs.table
    assert len(raw) == 76_074 and len(t) == 76_074
    # the one problem of the real table: a creatinine of 138 mg/dL (a µmol/L number in a mg/dL row), not read
    assert [(p.field, p.message) for p in problems] == [
        ("Creatinine: value", "expected a value between 0 and 40 mg/dL; found '138 mg/dL' in 1 row; not used by the model")]
    assert (t["not_used"] == "implausible").sum() == 1
    assert t["time"].notna().all() and t["itemid"].notna().all()
    has_number = np.isfinite(t["value"].to_numpy())
    text_only = t["value"].isna() & (t["value_text"].str.strip() != "")
    assert (has_number | text_only).all()


def test_demo_labevents_known_values(demo_labs) -> None:
    _, labs, _ = demo_labs
    t = labs.table
    below = t[t["value_text"] == "<0.01"]
    assert len(below) == 63
    assert (below["value"] == 0.01).all() and (below["censored"] == "below").all()
    above = t[t["value_text"] == ">1000"]
    assert len(above) == 5 and (above["value"] == 1000).all() and (above["censored"] == "above").all()
    less = t[t["value_text"] == "LESS THAN 10"]
    assert len(less) == 23 and (less["censored"] == "below").all()
    neg = t[t["value_text"] == "NEG"]
    assert len(neg) == 1911 and neg["value"].isna().all() and (neg["censored"] == "").all()
    assert t[t["value_text"] == "1+"]["value"].isna().all()
    assert set(t["censored"]) == {"", "below", "above"}
    assert set(t["flag"]) == {"", "abnormal", "delta"}
    # the file's first row, found again after the stable sort
    first = t[(t["itemid"] == 51214) & (t["time"] == pd.Timestamp("2115-05-13 14:53"))]
    assert first["value"].tolist() == [226.0] and first["unit"].tolist() == ["mg/dL"]


def test_demo_labevents_times_are_sorted(demo_labs) -> None:
    _, labs, _ = demo_labs
    assert labs.table["time"].is_monotonic_increasing


def test_times_with_unstripped_offsets_mixed_with_naive_times_do_not_raise() -> None:
    raw = pd.DataFrame({"time": ["2131-05-07 14:00 -0500", "2131-05-07 15:00", "garbage"],
                        "item": ["Sodium"] * 3, "value": ["140", "141", "142"]})
    labs, problems = labs_from_table(raw, "labs.csv")
    assert list(labs.table["time"]) == [pd.Timestamp("2131-05-07 14:00"), pd.Timestamp("2131-05-07 15:00")]
    assert any(p.field == "row 3: time" for p in problems)
