"""Lab results from a `labs.csv` table (bundle folders, MIMIC LABEVENTS) into the `Labs` contract.

Lab values in real extracts are text: numbers, censored results ("<0.5", "GREATER THAN 1000"),
words ("NEG", "HEMOLYZED") and ranges ("10-20"). A row is never dropped for its value: the number
is parsed where there is one, and the raw text is always kept in `value_text`. Only rows that
cannot be placed at all (no usable time, no item name or id) are dropped, each with a warning.

Row numbers in problems ("row 7: time") count data rows from 1; the header is not counted, so
row 1 is the file's second line.

The table helpers (`normalise_columns`, `parse_times`, `row_problems`, `to_float`) are shared with
`vitals.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medfuse_core.problems import DataError, Problem, warning
from medfuse_core.record import Labs

TIME_EXPECTED = "an ISO date-time like 2131-05-07 14:00"
MAX_ROW_WARNINGS = 20  # per field; beyond this one summary warning, so a bad file gives a readable list

# Censoring prefixes, longest first so "<=" wins over "<" (upper-cased text).
_BELOW = r"<=|=<|<|≤|LESS\s+THAN(?:\s+OR\s+EQUAL(?:\s+TO)?)?"
_ABOVE = r">=|=>|>|≥|GREATER\s+THAN(?:\s+OR\s+EQUAL(?:\s+TO)?)?"
# A plain decimal number, optional minus sign and exponent. No leading "+": "+1" / "1+" are urine
# dipstick grades (ordinal), not quantities in the lab's unit, so they stay text with NaN value.
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:E[+-]?\d+)?"
_LAB_VALUE = rf"^(?:(?P<below>{_BELOW})|(?P<above>{_ABOVE}))?\s*(?P<num>{_NUMBER})$"
# A comma followed by exactly three digits is a thousands separator ("1,234"), not a list.
_THOUSANDS = r"(?<=\d),(?=\d{3}(?:\D|$))"
_UTC_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"


@dataclass(frozen=True)
class ParsedLabValue:
    """A lab value as a number plus its censoring; NaN when the text holds no number."""

    value: float
    censored: str  # "" | "below" | "above"


def _on_unique(texts: pd.Series, parse: Callable[[pd.Series], pd.DataFrame]) -> pd.DataFrame:
    """Apply a vectorised text parser once per distinct text: real lab columns repeat a lot."""
    codes, uniques = pd.factorize(texts.astype(object).where(texts.notna(), ""), use_na_sentinel=False)
    parsed = parse(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
    out = parsed.iloc[codes]
    out.index = texts.index
    return out


def _parse_distinct_lab_values(texts: pd.Series) -> pd.DataFrame:
    """The regex work of `parse_lab_values`, on (distinct) strings."""
    norm = texts.str.strip().str.upper().str.replace(_THOUSANDS, "", regex=True)
    parts = norm.str.extract(_LAB_VALUE)
    value = pd.to_numeric(parts["num"], errors="coerce").astype("float64")
    value = value.where(np.isfinite(value))
    censored = np.where(parts["below"].notna(), "below", np.where(parts["above"].notna(), "above", ""))
    censored = np.where(value.notna(), censored, "")
    return pd.DataFrame({"value": value, "censored": pd.Series(censored, index=texts.index, dtype=object)})


def parse_lab_values(texts: pd.Series) -> pd.DataFrame:
    """Vectorised `parse_lab_value`: columns `value` (float64) and `censored` (str), same index."""
    return _on_unique(texts, _parse_distinct_lab_values)


def parse_lab_value(text: str | float | None) -> ParsedLabValue:
    """Parse one lab value text ("7.40", "<0.5", "GREATER THAN 1000", "NEG") to number + censoring."""
    if text is None:
        return ParsedLabValue(float("nan"), "")
    if isinstance(text, (int, float, np.number)) and not isinstance(text, bool):
        number = float(text)
        return ParsedLabValue(number if np.isfinite(number) else float("nan"), "")
    row = parse_lab_values(pd.Series([str(text)], dtype=object)).iloc[0]
    return ParsedLabValue(float(row["value"]), str(row["censored"]))


# ---------------------------------------------------------------------------------------------
# Table helpers shared with vitals.py
# ---------------------------------------------------------------------------------------------


def normalise_columns(raw: pd.DataFrame, file: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Lower-case, strip (and BOM-strip) the header; keep the first of columns that then collide."""
    names = [str(c).replace("\ufeff", "").strip().lower() for c in raw.columns]
    problems: list[Problem] = []
    keep: list[int] = []
    seen: set[str] = set()
    for position, name in enumerate(names):
        if name in seen:
            problems.append(warning(file, name, f"column {name!r} appears more than once; the first is used"))
            continue
        seen.add(name)
        keep.append(position)
    table = raw.iloc[:, keep].copy()
    table.columns = [names[i] for i in keep]
    table = table.reset_index(drop=True)
    for name in table.columns:
        table[name] = table[name].astype(object).where(table[name].notna(), "").astype(str)
    return table, problems


def require_columns(table: pd.DataFrame, file: str, required: tuple[str, ...], expected: str) -> None:
    """Raise DataError naming the first missing required column."""
    for name in required:
        if name not in table.columns:
            found = ", ".join(table.columns) if len(table.columns) else "no columns"
            raise DataError(file, name, f"expected columns {expected}; found {found}")


def parse_times(texts: pd.Series, file: str) -> tuple[pd.Series, list[Problem]]:
    """ISO date-times; NaT where unparseable or outside the nanosecond range the contract uses.

    A trailing UTC offset ("Z", "+02:00") is dropped and the wall-clock time kept, so times of one
    file stay on the clock a clinician wrote them on; one warning says so.
    """
    stripped = texts.str.strip()
    has_offset = stripped.str.contains(r"\d" + _UTC_OFFSET, regex=True)
    problems = []
    if has_offset.any():
        stripped = stripped.str.replace(r"\s*" + _UTC_OFFSET, "", regex=True)
        problems.append(
            warning(file, "time", f"{int(has_offset.sum())} times carry a UTC offset; it was dropped and "
                    "the local clock time kept")
        )
    times = pd.to_datetime(stripped, format="ISO8601", errors="coerce")
    in_range = (times >= pd.Timestamp.min) & (times <= pd.Timestamp.max)
    return times.where(in_range), problems


def row_problems(
    file: str, rows: pd.Index, field: str, expected: str, found: pd.Series, outcome: str
) -> list[Problem]:
    """One warning per bad row (up to MAX_ROW_WARNINGS), then one summary for the rest.

    `rows` are labels of `found`, which are 0-based input row positions; `outcome` says what was done
    ("row dropped", "limit left unknown").
    """
    positions = list(rows)
    out = [
        warning(file, f"row {p + 1}: {field}", f"expected {expected}; found {found.loc[p]!r}; {outcome}")
        for p in positions[:MAX_ROW_WARNINGS]
    ]
    rest = positions[MAX_ROW_WARNINGS:]
    if rest:
        sample = ", ".join(str(p + 1) for p in rest[:10]) + (", ..." if len(rest) > 10 else "")
        out.append(
            warning(file, f"{len(rest)} more rows: {field}", f"expected {expected}; {outcome} in rows {sample}")
        )
    return out


def _distinct_to_float(texts: pd.Series) -> pd.DataFrame:
    norm = texts.str.strip().str.replace(_THOUSANDS, "", regex=True)
    value = pd.to_numeric(norm.where(norm.str.fullmatch(_NUMBER, case=False), ""), errors="coerce")
    value = value.astype("float64")
    return pd.DataFrame({"value": value.where(np.isfinite(value))})


def to_float(texts: pd.Series) -> pd.Series:
    """Plain numbers ("7.4", " 98 ", "1,234"); NaN for anything else, including inf/nan text."""
    return _on_unique(texts, _distinct_to_float)["value"]


# ---------------------------------------------------------------------------------------------
# labs.csv
# ---------------------------------------------------------------------------------------------

_LAB_EXPECTED = "time, value and item or itemid"


def _itemids(texts: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Integer item ids (<NA> where empty or not an integer) and a mask of non-empty bad ids."""
    stripped = texts.str.strip()
    number = to_float(stripped)
    whole = number.notna() & (number == np.round(number)) & (number.abs() < 2**53)
    return number.where(whole).astype("Int64"), (stripped != "") & ~whole


def _reference_limit(texts: pd.Series, field: str, file: str) -> tuple[pd.Series, list[Problem]]:
    """A reference limit as a number; NaN (and a warning) for text that is not one."""
    value = to_float(texts)
    bad = (texts != "") & value.isna()
    return value, row_problems(file, texts.index[bad], field, "a number like 0.5", texts, "limit left unknown")


def _ref_order_problems(ref_low: pd.Series, ref_high: pd.Series, file: str) -> list[Problem]:
    """A lower limit above the upper one is kept as given but flagged: one of them is likely wrong."""
    swapped = ref_low > ref_high
    pairs = zip(ref_low[swapped], ref_high[swapped])
    found = pd.Series([f"{low:g} > {high:g}" for low, high in pairs], index=ref_low.index[swapped], dtype=object)
    return row_problems(
        file, ref_low.index[swapped], "ref_low", "ref_low <= ref_high", found, "both limits kept as given"
    )


def _text(table: pd.DataFrame, name: str) -> pd.Series:
    """A stripped optional text column, "" where absent."""
    return table[name].str.strip() if name in table else pd.Series("", index=table.index, dtype=object)


def _placeable(table: pd.DataFrame, times: pd.Series, itemid: pd.Series, file: str) -> tuple[pd.Series, list[Problem]]:
    """Rows to keep: a parseable time and an item name or id; a warning for each row dropped."""
    bad_time = times.isna()
    no_item = (_text(table, "item") == "") & itemid.isna() & ~bad_time
    problems = row_problems(file, table.index[bad_time], "time", TIME_EXPECTED, table["time"], "row dropped")
    field = "item" if "item" in table else "itemid"
    problems += row_problems(
        file, table.index[no_item], field, "an item name or an integer itemid", table[field], "row dropped"
    )
    return ~bad_time & ~no_item, problems


def labs_from_table(raw: pd.DataFrame, file: str) -> tuple[Labs, list[Problem]]:
    """Read a labs table (all-string cells) into `Labs`, with the problems met on the way.

    Rows are sorted by time, stably, so rows charted together keep their order in the file.
    """
    file = str(file)
    if len(raw.columns) == 0 and len(raw) == 0:
        return Labs(), []
    table, problems = normalise_columns(raw, file)
    require_columns(table, file, ("time", "value"), _LAB_EXPECTED)
    if "item" not in table and "itemid" not in table:
        require_columns(table, file, ("item",), _LAB_EXPECTED)
    times, time_problems = parse_times(table["time"], file)
    problems += time_problems
    itemid, bad_id = _itemids(table["itemid"]) if "itemid" in table else (
        pd.Series(pd.NA, index=table.index, dtype="Int64"), pd.Series(False, index=table.index))
    keep, drop_problems = _placeable(table, times, itemid, file)
    problems += drop_problems
    problems += row_problems(
        file, table.index[bad_id & keep], "itemid", "an integer item id like 50912", table.get("itemid"),
        "item id left unknown"
    )
    out, value_problems = _lab_columns(table[keep], times[keep], itemid[keep], file)
    problems += value_problems
    out = out.sort_values("time", kind="stable").reset_index(drop=True)
    return Labs(out), problems


def _lab_columns(
    kept: pd.DataFrame, times: pd.Series, itemid: pd.Series, file: str
) -> tuple[pd.DataFrame, list[Problem]]:
    """The contract's columns for the kept rows (index = input row positions, for messages)."""
    parsed = parse_lab_values(kept["value"])
    ref_low, low_problems = _reference_limit(_text(kept, "ref_low"), "ref_low", file)
    ref_high, high_problems = _reference_limit(_text(kept, "ref_high"), "ref_high", file)
    out = pd.DataFrame(
        {
            "time": times,
            "itemid": itemid,
            "item": _text(kept, "item"),
            "value": parsed["value"],
            "value_text": kept["value"],
            "censored": parsed["censored"],
            "unit": _text(kept, "unit"),
            "ref_low": ref_low,
            "ref_high": ref_high,
            "flag": _text(kept, "flag"),
        },
        index=kept.index,
    )
    return out, low_problems + high_problems + _ref_order_problems(ref_low, ref_high, file)
