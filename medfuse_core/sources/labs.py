"""Lab results from a `labs.csv` table (bundle folders, MIMIC LABEVENTS) into the `Labs` contract.

Lab values in real extracts are text: numbers, censored results ("<0.5", "GREATER THAN 1000"),
words ("NEG", "HEMOLYZED") and ranges ("10-20"). A row is never dropped for its value: the number
is parsed where there is one, and the raw text is always kept in `value_text`. Only rows that
cannot be placed at all (no usable time, no item name or id) are dropped, each with a warning.

Row numbers in problems ("row 7: time") count data rows from 1; the header is not counted, so
row 1 is the file's second line.

The table helpers (`normalise_columns`, `parse_times`, `to_float`) are shared with `vitals.py`; the cell
parsing both use is `cell_text.py`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas._libs import lib

from medfuse_core.problems import DataError, Problem, info, warning
from medfuse_core.record import Labs
from medfuse_core.sources.lab_harmonise import LabArrays, harmonise_arrays
from medfuse_core.sources.cell_text import (
    NUMBER,
    THOUSANDS,
    as_to_numeric_call,
    float_parts,
    number_values,
    is_plain_text,
    row_problems,
    row_problems_at,
    str_cells,
    stripped_cells,
)
from medfuse_core.sources.lab_vocabulary import by_itemid, loinc_code

TIME_EXPECTED = "an ISO date-time like 2131-05-07 14:00"

# Censoring prefixes, longest first so "<=" wins over "<" (upper-cased text).
_BELOW = r"<=|=<|<|≤|LESS\s+THAN(?:\s+OR\s+EQUAL(?:\s+TO)?)?"
_ABOVE = r">=|=>|>|≥|GREATER\s+THAN(?:\s+OR\s+EQUAL(?:\s+TO)?)?"
_LAB_VALUE = rf"^(?:(?P<below>{_BELOW})|(?P<above>{_ABOVE}))?\s*(?P<num>{NUMBER})$"
_UTC_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"


@dataclass(frozen=True)
class ParsedLabValue:
    """A lab value as a number plus its censoring; NaN when the text holds no number."""

    value: float
    censored: str  # "" | "below" | "above"


_THOUSANDS_RE = re.compile(THOUSANDS)
_LAB_VALUE_RE = re.compile(_LAB_VALUE)


def _distinct_texts(texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and distinct values of `texts` with missing cells as "" (object array)."""
    values = texts.to_numpy(dtype=object)
    if len(values) and not lib.is_string_array(values, skipna=False) and texts.hasnans:
        values = texts.astype(object).where(texts.notna(), "").to_numpy(dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes, np.asarray(uniques, dtype=object)


def _on_unique(texts: pd.Series, parse: Callable[[pd.Series], pd.DataFrame]) -> pd.DataFrame:
    """Apply a vectorised text parser once per distinct text: real lab columns repeat a lot."""
    codes, uniques = pd.factorize(texts.astype(object).where(texts.notna(), ""), use_na_sentinel=False)
    parsed = parse(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
    out = parsed.iloc[codes]
    out.index = texts.index
    return out


def _float_array(texts: pd.Series) -> np.ndarray | None:
    """`to_float(texts)` as a float64 array; None when a cell is not text (then use the pandas path)."""
    codes, uniques = _distinct_texts(texts)
    if len(uniques) and not lib.is_string_array(uniques, skipna=False):
        return None
    values, integer, candidates = float_parts(uniques)
    return as_to_numeric_call(values, integer, candidates)[codes]


def _float_values(texts: np.ndarray) -> np.ndarray:
    """`to_float` of an object array of str (no missing cells) as a float64 array."""
    codes, uniques = pd.factorize(texts)
    values, integer, candidates = float_parts(np.asarray(uniques, dtype=object))
    return as_to_numeric_call(values, integer, candidates)[codes]


def _parse_distinct_lab_values(texts: pd.Series) -> pd.DataFrame:
    """The regex work of `parse_lab_values`, on (distinct) strings."""
    norm = texts.str.strip().str.upper().str.replace(THOUSANDS, "", regex=True)
    parts = norm.str.extract(_LAB_VALUE)
    value = pd.to_numeric(parts["num"], errors="coerce").astype("float64")
    value = value.where(np.isfinite(value))
    censored = np.where(parts["below"].notna(), "below", np.where(parts["above"].notna(), "above", ""))
    censored = np.where(value.notna(), censored, "")
    return pd.DataFrame({"value": value, "censored": pd.Series(censored, index=texts.index, dtype=object)})


def _lab_value_arrays(texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """`parse_lab_values(texts)` as arrays (float64 value, object censored)."""
    codes, uniques = _distinct_texts(texts)
    if len(uniques) and not lib.is_string_array(uniques, skipna=False):
        parsed = _on_unique(texts, _parse_distinct_lab_values)
        return parsed["value"].to_numpy(dtype="float64"), parsed["censored"].to_numpy(dtype=object)
    candidates: list[str | None] = []
    censoring: list[str] = []
    for text in uniques:
        text = text.strip().upper()
        if "," in text:
            text = _THOUSANDS_RE.sub("", text)
        match = _LAB_VALUE_RE.search(text)
        if match is None:
            candidates.append(None)
            censoring.append("")
        else:
            candidates.append(match["num"])
            censoring.append("below" if match["below"] is not None else "above" if match["above"] is not None else "")
    values, integer = number_values(candidates)
    values = as_to_numeric_call(values, integer, candidates)
    censored = np.array(censoring, dtype=object)
    censored[np.isnan(values)] = ""
    return values[codes], censored[codes]


def parse_lab_values(texts: pd.Series) -> pd.DataFrame:
    """Vectorised `parse_lab_value`: columns `value` (float64) and `censored` (str), same index."""
    value, censored = _lab_value_arrays(texts)
    return pd.DataFrame(
        {"value": pd.Series(value, index=texts.index, dtype="float64"),
         "censored": pd.Series(censored, index=texts.index, dtype=object)},
        index=texts.index,
    )


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


_DEFAULT_STR = pd.Series([""], dtype=object).astype(str).dtype


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
    table = raw.copy() if len(keep) == len(names) else raw.iloc[:, keep].copy()
    if raw.columns.tolist() != names or len(keep) != len(names):
        table.columns = [names[i] for i in keep]
    index = table.index
    if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        table = table.reset_index(drop=True)
    if all(d == _DEFAULT_STR for d in table.dtypes.tolist()) and not table.isna().to_numpy().any():
        return table, problems  # already what the conversion below gives
    for name in table.columns:
        table[name] = table[name].astype(object).where(table[name].notna(), "").astype(str)
    return table, problems


def require_columns(table: pd.DataFrame, file: str, required: tuple[str, ...], expected: str) -> None:
    """Raise DataError naming the first missing required column."""
    for name in required:
        if name not in table.columns:
            found = ", ".join(table.columns) if len(table.columns) else "no columns"
            raise DataError(file, name, f"expected columns {expected}; found {found}")


_OFFSET_AFTER_DIGIT_RE = re.compile(r"\d\s*" + _UTC_OFFSET)  # "09:00+02:00", "09:00Z", "09:00 -0500"
_OFFSET_RE = re.compile(r"\s*" + _UTC_OFFSET)
_NS_PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def sort_by_time(times: pd.Series) -> tuple[np.ndarray, np.ndarray | pd.Series]:
    """Stable time order of `times` and the sorted time column, for the contract's tables."""
    time_array = times.to_numpy()
    if time_array.dtype.kind == "M":  # naive datetimes: sort here, in the contract's unit
        time_array = time_array.astype("datetime64[ns]")
        order = np.argsort(time_array, kind="stable")
        return order, time_array[order]
    # anything else: as pandas sorts it, converted by the contract
    order = times.reset_index(drop=True).sort_values(kind="stable").index.to_numpy()
    return order, times.iloc[order].reset_index(drop=True)


def parse_times(texts: pd.Series, file: str, clock: datetime.tzinfo | None = None) -> tuple[pd.Series, list[Problem]]:
    """ISO date-times; NaT where unparseable or outside the nanosecond range the contract uses.

    The bundle's time rule (README, "Times"): `clock` is the UTC offset of the bundle's index_time.
    With a clock, a time carrying an offset ("Z", "+02:00") is converted to that clock, so one
    instant is one time in every file (one info line says how many); a time without an offset is
    taken as on that clock. Without a clock (index_time has no offset), the offset is dropped and the
    wall-clock time kept, with one warning, since there is nothing to convert it to.
    """
    if clock is not None:
        texts, shifted = _to_clock(texts, clock)
        times, problems = parse_times(texts, file)
        if shifted:
            problems.append(info(file, "time", f"{shifted} times carry a UTC offset; converted to the index "
                                               f"time's offset ({_offset_text(clock)})"))
        return times, problems
    values = str_cells(texts) if texts.dtype == object or isinstance(texts.dtype, pd.StringDtype) else None
    if values is None:
        return _parse_times_series(texts, file)
    codes, uniques = pd.factorize(values)
    uniques = np.asarray(uniques, dtype=object)
    if not is_plain_text(uniques):
        times, problems = _parse_times_series(pd.Series(uniques, dtype=texts.dtype, name=texts.name), file,
                                              counts=np.bincount(codes, minlength=len(uniques)))
        out = times.iloc[codes]
        out.index = texts.index
        return out, problems
    stripped = [u.strip() for u in uniques]
    has_offset = np.array([_OFFSET_AFTER_DIGIT_RE.search(u) is not None for u in stripped], dtype=bool)
    problems = []
    if has_offset.any():
        stripped = [_OFFSET_RE.sub("", u) for u in stripped]
        problems.append(_offset_warning(file, int(has_offset[codes].sum())))
    times = _iso_datetimes(pd.Series(stripped, dtype=texts.dtype, name=texts.name))
    array = times.to_numpy()
    unit = np.datetime_data(array.dtype)[0] if array.dtype.kind == "M" else None
    if unit not in _NS_PER_UNIT:
        in_range = (times >= pd.Timestamp.min) & (times <= pd.Timestamp.max)
        out = times.where(in_range).iloc[codes]
        out.index = texts.index
        return out, problems
    per = _NS_PER_UNIT[unit]
    ticks = array.view("i8")
    in_range = (ticks >= -(-pd.Timestamp.min.value // per)) & (ticks <= pd.Timestamp.max.value // per)
    array = np.where(in_range, array, np.datetime64("NaT", unit))
    return pd.Series(array[codes], index=texts.index, name=texts.name), problems


def _iso_datetimes(texts: pd.Series) -> pd.Series:
    """pd.to_datetime(ISO8601, errors="coerce"), except that a column pandas refuses as a whole
    (offsets it did not strip, e.g. "14:00 -0500", mixed with naive times) is parsed cell by cell,
    keeping each cell's wall-clock time, instead of raising."""
    try:
        return pd.to_datetime(texts, format="ISO8601", errors="coerce")
    except (ValueError, TypeError, OverflowError):
        return pd.Series([_one_datetime(v) for v in texts], index=texts.index, name=texts.name, dtype="datetime64[ns]")


def _one_datetime(text: object) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    if pd.isna(stamp):
        return pd.NaT
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def _offset_text(clock: datetime.tzinfo) -> str:
    offset = clock.utcoffset(None) or datetime.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    return f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def to_clock(stamp: pd.Timestamp, clock: datetime.tzinfo | None) -> pd.Timestamp:
    """One time under the bundle's time rule (see `parse_times`): converted to `clock` when both have an
    offset, the wall clock otherwise; always returned without an offset."""
    if stamp.tzinfo is None:
        return stamp
    if clock is not None:
        stamp = stamp.tz_convert(clock)
    return stamp.tz_localize(None)


def _to_clock(texts: pd.Series, clock: datetime.tzinfo) -> tuple[pd.Series, int]:
    """Texts with an offset rewritten as naive ISO times on `clock`; how many rows were rewritten."""
    values = texts.astype(object).where(texts.notna(), "").astype(str)
    codes, uniques = pd.factorize(values.to_numpy(dtype=object))
    out = []
    shifted = np.zeros(len(uniques), dtype=bool)
    for i, u in enumerate(uniques):
        text = u.strip()
        if _OFFSET_AFTER_DIGIT_RE.search(text) is None:
            out.append(u)
            continue
        stamp = _one_aware(text)
        if stamp is None:
            out.append(_OFFSET_RE.sub("", text))
            continue
        out.append(stamp.tz_convert(clock).tz_localize(None).isoformat())
        shifted[i] = True
    return (pd.Series(np.asarray(out, dtype=object)[codes], index=texts.index, name=texts.name, dtype=object),
            int(shifted[codes].sum()))


def _one_aware(text: str) -> pd.Timestamp | None:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if pd.isna(stamp) or stamp.tzinfo is None else stamp


def _offset_warning(file: str, n: int) -> Problem:
    return warning(file, "time", f"{n} times carry a UTC offset; it was dropped and the local clock time kept")


def _parse_times_series(texts: pd.Series, file: str, counts: np.ndarray | None = None) -> tuple[pd.Series, list[Problem]]:
    """`parse_times` with pandas' string methods; `counts`: rows per cell when cells are distinct texts."""
    stripped = texts.str.strip()
    has_offset = stripped.str.contains(r"\d\s*" + _UTC_OFFSET, regex=True)
    problems = []
    if has_offset.any():
        stripped = stripped.str.replace(r"\s*" + _UTC_OFFSET, "", regex=True)
        n = int(has_offset.sum()) if counts is None else int(counts[has_offset.to_numpy(dtype=bool)].sum())
        problems.append(_offset_warning(file, n))
    times = _iso_datetimes(stripped)
    in_range = (times >= pd.Timestamp.min) & (times <= pd.Timestamp.max)
    return times.where(in_range), problems


def _distinct_to_float(texts: pd.Series) -> pd.DataFrame:
    norm = texts.str.strip().str.replace(THOUSANDS, "", regex=True)
    value = pd.to_numeric(norm.where(norm.str.fullmatch(NUMBER, case=False), ""), errors="coerce")
    value = value.astype("float64")
    return pd.DataFrame({"value": value.where(np.isfinite(value))})


def to_float(texts: pd.Series) -> pd.Series:
    """Plain numbers ("7.4", " 98 ", "1,234"); NaN for anything else, including inf/nan text."""
    values = _float_array(texts)
    if values is None:
        return _on_unique(texts, _distinct_to_float)["value"]
    return pd.Series(values, index=texts.index, dtype="float64", name="value")


# ---------------------------------------------------------------------------------------------
# labs.csv


# ---------------------------------------------------------------------------------------------

_LAB_EXPECTED = "time, value and item or itemid"


def _itemids(texts: pd.Series) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """Integer item ids (<NA> where empty or not an integer), a mask of non-empty bad ids, and the
    LOINC codes written in the column instead ("2345-7", "http://loinc.org|2345-7"; "" elsewhere)."""
    stripped = stripped_cells(texts)
    number = _float_values(stripped)
    whole = ~np.isnan(number) & (number == np.round(number)) & (np.abs(number) < 2**53)
    ids = pd.arrays.IntegerArray(np.where(whole, number, 0.0).astype("int64"), ~whole)
    loinc = _loinc_codes(np.where(whole, "", stripped).astype(object))
    bad = (stripped != "") & ~whole & (loinc == "")
    return pd.Series(ids, index=texts.index), pd.Series(bad, index=texts.index), loinc


def _loinc_codes(texts: np.ndarray) -> np.ndarray:
    """LOINC code per text ("" where the text is empty or holds none), once per distinct text."""
    codes, uniques = pd.factorize(texts)
    found = np.array([loinc_code(u) or "" for u in uniques] + [""], dtype=object)
    return found[codes]


def _reference_limit(texts: np.ndarray, field: str, file: str, rows: np.ndarray) -> tuple[np.ndarray, list[Problem]]:
    """A reference limit as a number; NaN (and a warning) for text that is not one. `rows`: input row
    positions of `texts`, for messages."""
    value = _float_values(texts)
    bad = (texts != "") & np.isnan(value)
    if not bad.any():
        return value, []
    found = pd.Series(texts, index=rows, dtype=object)
    return value, row_problems(file, found.index[bad], field, "a number like 0.5", found, "limit left unknown")


def _ref_order_problems(ref_low: np.ndarray, ref_high: np.ndarray, rows: np.ndarray, file: str) -> list[Problem]:
    """A lower limit above the upper one is kept as given but flagged: one of them is likely wrong."""
    swapped = ref_low > ref_high
    if not swapped.any():
        return []
    pairs = zip(ref_low[swapped], ref_high[swapped])
    found = pd.Series([f"{low:g} > {high:g}" for low, high in pairs], index=rows[swapped], dtype=object)
    return row_problems(file, found.index, "ref_low", "ref_low <= ref_high", found, "both limits kept as given")


def _text(table: pd.DataFrame, name: str) -> np.ndarray:
    """A stripped optional text column, "" where absent (object array)."""
    return stripped_cells(table[name]) if name in table else np.full(len(table), "", dtype=object)


def _placeable(table: pd.DataFrame, bad_time: np.ndarray, item: np.ndarray, has_id: np.ndarray,
               file: str) -> tuple[np.ndarray, list[Problem]]:
    """Rows to keep: a parseable time and an item name or id; a warning for each row dropped."""
    no_item = (item == "") & ~has_id & ~bad_time
    problems = row_problems_at(file, bad_time, "time", TIME_EXPECTED, table["time"], "row dropped")
    field = "item" if "item" in table else "itemid"
    problems += row_problems_at(
        file, no_item, field, "an item name or an integer itemid", table[field], "row dropped"
    )
    return ~bad_time & ~no_item, problems


def labs_from_table(raw: pd.DataFrame, file: str, clock: datetime.tzinfo | None = None) -> tuple[Labs, list[Problem]]:
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
    times, time_problems = parse_times(table["time"], file, clock)
    problems += time_problems
    n = len(table)
    loinc = np.full(n, "", dtype=object)
    if "itemid" in table:
        itemid, bad_id, loinc = _itemids(table["itemid"])
        itemid, bad_id = itemid.array, bad_id.to_numpy(dtype=bool)
    else:
        itemid = pd.arrays.IntegerArray(np.zeros(n, dtype="int64"), np.ones(n, dtype=bool))
        bad_id = np.zeros(n, dtype=bool)
    if "loinc" in table:
        written = _text(table, "loinc")
        codes = _loinc_codes(written)
        bad_loinc = (written != "") & (codes == "")
        problems += row_problems_at(file, bad_loinc, "loinc", "a LOINC code like 2345-7", table["loinc"],
                                     "code left unknown")
        loinc = np.where(codes != "", codes, loinc).astype(object)
    item = _text(table, "item")
    bad_time = times.isna().to_numpy(dtype=bool)
    keep, drop_problems = _placeable(table, bad_time, item, ~itemid.isna() | (loinc != ""), file)
    problems += drop_problems
    problems += row_problems_at(
        file, bad_id & keep, "itemid", "an integer item id like 50912 or a LOINC code like 2345-7",
        table.get("itemid"), "item id left unknown"
    )
    rows = np.flatnonzero(keep)
    columns, value_problems = _lab_columns(table, rows, times, itemid, item, loinc, file)
    problems += value_problems
    return Labs(columns), problems


def _lab_columns(
    table: pd.DataFrame, rows: np.ndarray, times: pd.Series, itemid: pd.api.extensions.ExtensionArray,
    item: np.ndarray, loinc: np.ndarray, file: str
) -> tuple[pd.DataFrame, list[Problem]]:
    """The contract's columns for the kept `rows` (input row positions, for messages), sorted by time
    (stably), on a fresh RangeIndex."""
    kept_times = times.iloc[rows]
    value, censored = _lab_value_arrays(table["value"].iloc[rows])
    ref_low, low_problems = _reference_limit(_text(table, "ref_low")[rows], "ref_low", file, rows)
    ref_high, high_problems = _reference_limit(_text(table, "ref_high")[rows], "ref_high", file, rows)
    problems = low_problems + high_problems + _ref_order_problems(ref_low, ref_high, rows, file)
    order, time_column = sort_by_time(kept_times)
    at = rows[order]
    index = pd.RangeIndex(len(at))
    unit = _text(table, "unit")[at]
    ids = itemid[at]
    harmonised, harmonise_problems = harmonise_arrays(
        LabArrays(itemid=np.asarray(ids.fillna(-1), dtype="int64"), item=item[at], loinc=loinc[at], unit=unit,
                  value=value[order], value_text=table["value"].to_numpy(dtype=object)[at], censored=censored[order],
                  ref_low=ref_low[order], ref_high=ref_high[order]), file)
    problems += harmonise_problems

    def text(values: np.ndarray) -> pd.Series:
        return pd.Series(values, index=index, dtype=object)

    h = harmonised
    out = pd.DataFrame(
        {
            "time": time_column,
            "itemid": pd.arrays.IntegerArray(np.where(h.itemid >= 0, h.itemid, 0), h.itemid < 0),
            "item": text(h.item),
            "value": h.value,
            "value_text": text(h.value_text),
            "censored": text(h.censored),
            "unit": text(unit),
            "ref_low": h.ref_low,
            "ref_high": h.ref_high,
            "flag": text(_text(table, "flag")[at]),
            "loinc": text(h.loinc),
            "value_unit": text(h.value_unit),
            "not_used": text(h.not_used),
        },
        index=index,
    )
    return out, problems


# ---------------------------------------------------------------------------------------------
# Checks on one patient's labs (bundles): repeated results, an item in two units


# ---------------------------------------------------------------------------------------------


def _unit_key(unit: str) -> str:
    """Units compared ignoring case, spacing and the micro sign's spelling ("umol/L" ~ "µmol/L")."""
    return re.sub(r"\s+", "", unit).replace("µ", "u").replace("μ", "u").casefold()


def _item_label(item: str, itemid: object) -> str:
    return item or (f"itemid {itemid}" if not pd.isna(itemid) else "(unnamed item)")


def _rows_text(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def check_patient_labs(labs: Labs, file: str) -> tuple[Labs, list[Problem]]:
    """Checks that need one patient's whole table (so not in `labs_from_table`, which also reads whole
    MIMIC cohorts in one table):

    - An exact copy of a result (same time, item, value text and unit) is kept for display but not used
      (`not_used` = "duplicate"), one warning per item: a copy would count twice in the model's summary.
    - Tests of the lab vocabulary were already converted to the model's unit (`lab_harmonise.py`). An
      item outside it given in more than one unit is *not converted* (no molar mass or factor is known
      for it): the rows in the item's most common unit (ties: the earliest) are used; the others keep
      their text, unit and reference range for display but are not used ("unit incompatible"). One
      warning per item names both units and what was done.
    """
    table = labs.table
    if table.empty:
        return labs, []
    problems: list[Problem] = []
    file = str(file)
    copies = table.duplicated(["time", "itemid", "item", "value_text", "unit"], keep="first").to_numpy()
    copies = copies & (table["not_used"] != "duplicate").to_numpy()
    if copies.any():
        for (_, _), group in table[copies].groupby(["itemid", "item"], dropna=False, sort=False):
            label = _item_label(group["item"].iloc[0], group["itemid"].iloc[0])
            first = group.iloc[0]
            shown = f"{first['value_text']!r}{' ' + first['unit'] if first['unit'] else ''}"
            problems.append(warning(file, f"{label}: time",
                                    f"expected each result once; {_rows_text(len(group))} repeating an earlier row "
                                    f"exactly (e.g. {shown} at {first['time']}) shown but not used by the model"))
        table = table.copy()
        table.loc[copies, "value"] = np.nan
        table.loc[copies, "censored"] = ""
        table.loc[copies, "not_used"] = "duplicate"
    table, unit_problems = _unit_conflicts(table, file)
    problems += unit_problems
    return (Labs(table) if problems else labs), problems


def _unit_conflicts(table: pd.DataFrame, file: str) -> tuple[pd.DataFrame, list[Problem]]:
    units = table["unit"].astype(str).str.strip()
    in_vocabulary = np.array([by_itemid(int(i)) is not None if not pd.isna(i) else False for i in table["itemid"]],
                             dtype=bool)
    has_unit = (units != "").to_numpy() & ~in_vocabulary & (table["not_used"] == "").to_numpy()
    if not has_unit.any():
        return table, []
    keys = pd.Series(item_group_keys(table), index=table.index)
    unit_keys = units.map(_unit_key)
    n_units = unit_keys[has_unit].groupby(keys[has_unit], sort=False).nunique()
    conflicted = n_units[n_units > 1].index
    if conflicted.empty:
        return table, []
    table = table.copy()
    problems = []
    for key in conflicted:
        rows = np.flatnonzero((keys == key).to_numpy() & has_unit)
        counts = unit_keys.iloc[rows].value_counts(sort=False)  # first-seen (time) order
        kept = counts.idxmax()  # most rows; ties: the earliest
        spelled = {k: units.iloc[rows][unit_keys.iloc[rows] == k].iloc[0] for k in counts.index}
        dropped = rows[(unit_keys.iloc[rows] != kept).to_numpy()]
        table.loc[table.index[dropped], "value"] = np.nan
        table.loc[table.index[dropped], "censored"] = ""
        table.loc[table.index[dropped], "not_used"] = "unit incompatible"
        label = _item_label(table["item"].iloc[rows[0]], table["itemid"].iloc[rows[0]])
        found = " and ".join(f"{spelled[k]} ({_rows_text(int(n))})" for k, n in counts.items())
        others = ", ".join(spelled[k] for k in counts.index if k != kept)
        problems.append(warning(
            file, f"{label}: unit",
            f"expected one unit per item; found {found}. The {_rows_text(len(dropped))} in {others} "
            f"{'is' if len(dropped) == 1 else 'are'} shown as written but not used by the model; no unit "
            f"conversion is made (the model uses the {_rows_text(len(rows) - len(dropped))} in {spelled[kept]})"))
    return table, problems


def item_group_keys(table: pd.DataFrame) -> np.ndarray:
    """One key per row naming its item: the item id where known, else the name ignoring case."""
    ids = table["itemid"]
    names = table["item"].astype(str).str.strip().str.casefold()
    return np.where(ids.notna().to_numpy(), "id:" + ids.astype("string").fillna("").to_numpy(dtype=object),
                    "name:" + names.to_numpy(dtype=object)).astype(object)
