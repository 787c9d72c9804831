"""Vital signs from a `vitals.csv` table (time, channel, value) into the `Vitals` contract.

Semantics follow mimic3-benchmarks, the clinical time-series pipeline MedFuse uses: its 17 channels,
its categorical maps (GCS, capillary refill), its unit cleaning and its outlier ranges, all read
from the vendored resource files through `channel_spec()`.

- Channel names are matched ignoring case, spacing and underscores, plus a few common short names
  ("HR", "SpO2", "Glasgow coma scale total"); stored under the benchmark's spelling. Unknown
  channels are kept for display with one warning per name.
- Categorical channels: text -> score through `VitalChannel.value_map` (ignoring case and spacing);
  a bare score ("4" for eye opening) is accepted too. Unknown text: value NaN, row kept, warned.
- Numeric channels: unit cleaning as mimic3-benchmarks' `clean_events` (see `_CLEANERS`), then its
  `remove_outliers_for_variable`: outside [outlier_low, outlier_high] -> not used (`not_used` =
  "implausible", value NaN, the row kept for display; one warning per channel), otherwise clipped to
  [valid_low, valid_high] silently, as the benchmark does; the raw text stays in `value_text`. Non-numeric text: value NaN, row kept, one warning per channel.
- A `unit` column is optional. Where a row gives a unit, its value is converted to the channel's unit
  (`CHANNEL_UNITS`: °F -> °C, % -> fraction for FiO2, lb -> kg, mmol/L -> mg/dL for glucose) instead of
  the benchmark's guesses from the number; a unit that is unknown or does not convert leaves the row
  for display with no value and `not_used` saying why, with one warning per channel and unit.
- Rows without a usable time or channel name are dropped with a warning per row.
Row numbers in problems count data rows from 1 (the header is not counted).
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pandas as pd

from medfuse_core.problems import Problem, warning
from medfuse_core.record import Vitals
from medfuse_core.sources.cell_text import (
    as_to_numeric_call,
    float_parts,
    is_plain_text,
    row_problems_at,
    stripped_cells,
)
from medfuse_core.sources.labs import TIME_EXPECTED, normalise_columns, parse_times, require_columns, sort_by_time
from medfuse_core.sources.units import UnitProblem, conversion, convert_array, to_ucum
from medfuse_core.sources.vital_channels import CHANNEL_NAMES, VitalChannel, channel_spec

_EXPECTED = "time, channel and value"
_EXAMPLES = 5  # values quoted in an aggregated warning

# Short names seen in bedside exports and hand-made bundles -> the benchmark's channel name.
_ALIASES: dict[str, str] = {
    "hr": "Heart Rate",
    "pulse": "Heart Rate",
    "sbp": "Systolic blood pressure",
    "dbp": "Diastolic blood pressure",
    "map": "Mean blood pressure",
    "mbp": "Mean blood pressure",
    "rr": "Respiratory rate",
    "resp rate": "Respiratory rate",
    "spo2": "Oxygen saturation",
    "o2 saturation": "Oxygen saturation",
    "fio2": "Fraction inspired oxygen",
    "temp": "Temperature",
    "gcs": "Glascow coma scale total",
    "gcs total": "Glascow coma scale total",
    "gcs eye": "Glascow coma scale eye opening",
    "gcs motor": "Glascow coma scale motor response",
    "gcs verbal": "Glascow coma scale verbal response",
    "capillary refill": "Capillary refill rate",
    "crr": "Capillary refill rate",
}

# mimic3-benchmarks `clean_crr` (preprocessing.py): CHARTEVENTS capillary-refill text -> 0 / 1.
_CRR_TEXT: dict[str, float] = {"normal <3 secs": 0.0, "brisk": 0.0, "abnormal >3 secs": 1.0, "delayed": 1.0}


def _key(text: str) -> str:
    """Comparison key: case, surrounding/inner spacing and underscores ignored; Glasgow ~ Glascow."""
    key = re.sub(r"[\s_]+", " ", text.strip().casefold())
    return key.replace("glasgow", "glascow")  # the benchmark spells it "Glascow"


@cache
def _channel_lookup() -> dict[str, str]:
    lookup = {_key(alias): name for alias, name in _ALIASES.items()}
    lookup.update({_key(name): name for name in CHANNEL_NAMES})
    return lookup


def canonical_channel(name: str) -> str | None:
    """The benchmark's name for a channel name as written, None when it is not one of the 17."""
    return _channel_lookup().get(_key(name))


# ---------------------------------------------------------------------------------------------
# Unit cleaning, after github.com/YerevaNN/mimic3-benchmarks mimic3benchmark/preprocessing.py
# (MIT licence; read at commit 000a1559), `clean_fns` used by `clean_events`:
#   clean_sbp / clean_dbp: "120/80" -> 120 / 80
#   clean_fio2:  VALUE > 1.0 -> VALUE / 100 (percent); its "torr" unit test needs a unit column
#   clean_o2sat: VALUE <= 1 -> VALUE * 100 (fraction)
#   clean_temperature: VALUE >= 79 -> Fahrenheit -> Celsius ((v - 32) * 5/9); its unit tests need
#                      a unit column (and, as written, `'F' in s.lower()` never matches)
#   clean_weight / clean_height: convert only for "oz"/"lb"/"in" units; vitals.csv has no unit
#                      column, so taken as given (kg, cm)
#   clean_lab (glucose, pH): non-numeric text ("ERROR") -> NaN
# Outliers after its remove_outliers_for_variable (values strictly outside the outlier limits
# removed, then clipped to the valid limits). The benchmark's extraction script does not call that
# function; MedFuse Lens applies it so implausible bedside values never reach the model.
# ---------------------------------------------------------------------------------------------

_PAIR = r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$"


# ---------------------------------------------------------------------------------------------
# Categorical channels
# ---------------------------------------------------------------------------------------------


@cache
def _category_lookup(name: str) -> dict[str, float]:
    """Category text key -> score for one categorical channel (benchmark map + clean_crr texts)."""
    spec = channel_spec()[name]
    lookup = {_key(text): score for text, score in spec.value_map.items()}
    if name == "Capillary refill rate":
        lookup.update(_CRR_TEXT)
    return lookup


def _quote_counts(texts: pd.Series) -> str:
    counts = texts.value_counts(sort=True)
    shown = [f"{text!r} ({n})" for text, n in counts.head(_EXAMPLES).items()]
    more = f" and {len(counts) - _EXAMPLES} more" if len(counts) > _EXAMPLES else ""
    return ", ".join(shown) + more


# ---------------------------------------------------------------------------------------------
# Numeric channels
# ---------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:g}"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _outlier_message(spec: VitalChannel, values: pd.Series, texts: pd.Series) -> str:
    shown = []
    for value, text in list(zip(values, texts))[:_EXAMPLES]:
        shown.append(_fmt(value) if text.strip() == _fmt(value) else f"{_fmt(value)} (from {text.strip()!r})")
    more = ", ..." if len(values) > _EXAMPLES else ""
    return (
        f"{_rows(len(values))} not used by the model: a value outside the plausible range {_fmt(spec.outlier_low)} to "
        f"{_fmt(spec.outlier_high)}: {', '.join(shown)}{more}; values between that and the valid range "
        f"{_fmt(spec.valid_low)} to {_fmt(spec.valid_high)} are clipped to it"
    )


# ---------------------------------------------------------------------------------------------
# vitals.csv
# ---------------------------------------------------------------------------------------------


def _channel_name_array(stripped: np.ndarray, file: str) -> tuple[np.ndarray, list[Problem]]:
    """Canonical names where known, the stripped name as written otherwise (one warning each), for
    stripped names (object array)."""
    codes, uniques = pd.factorize(stripped)
    known = [canonical_channel(u) for u in uniques]
    names = np.array([k or u for k, u in zip(known, uniques)] or [""], dtype=object)[codes] if len(codes) else (
        np.array([], dtype=object))
    problems = []
    counts = np.bincount(codes, minlength=len(uniques))
    for u, k, n in zip(uniques, known, counts):
        if k is None:
            problems.append(
                warning(
                    file, "channel",
                    f"unknown channel {u!r} ({_rows(int(n))}): kept for display, not used by the model; expected "
                    f"one of the 17 mimic3-benchmarks channels: {', '.join(CHANNEL_NAMES)}",
                )
            )
    return names, problems


# Speed: per-patient tables are small, so pandas' per-call overhead dominates. The value column is
# parsed once per distinct text for the whole table (numbers in Python, see labs.py), then each
# channel only gathers and compares numpy arrays. Text that is all printable ASCII is keyed and split
# with Python's `re`, which on such text matches pandas' string methods exactly; other text goes
# through those methods (once, on the distinct texts).


class _Texts:
    """The value texts of one table, worked on once per distinct text (object array of str)."""

    def __init__(self, texts: pd.Series):
        self.series = texts
        self.codes, uniques = pd.factorize(texts.to_numpy(dtype=object))
        self.uniques = np.asarray(uniques, dtype=object)
        self.plain = is_plain_text(self.uniques)
        self.number, self.integer, self.candidates = float_parts(self.uniques)

    def numbers(self, rows: np.ndarray) -> np.ndarray:
        """`to_float` of the texts of `rows`, as one call (the all-integer rule applies per call)."""
        used = self.codes[rows]
        distinct = np.unique(used)
        number = as_to_numeric_call(self.number[distinct], self.integer[distinct],
                                     [self.candidates[i] for i in distinct])
        return number[np.searchsorted(distinct, used)]

    def pandas(self, distinct: np.ndarray) -> pd.Series:
        """Distinct texts as a Series of the table's dtype, for pandas' string methods."""
        return pd.Series(self.uniques[distinct], dtype=self.series.dtype)

    def at(self, rows: np.ndarray) -> pd.Series:
        """The texts of `rows` as written (for messages)."""
        return self.series.iloc[rows]


def _category_keys(texts: _Texts, distinct: np.ndarray) -> list[str]:
    """Comparison key of distinct texts for the category maps: stripped, case-folded, runs of spacing
    and underscores as one space."""
    if texts.plain:  # printable ASCII: strip/casefold/regex give the same in Python
        return [_SPACING_RE.sub(" ", u.strip().lower()) for u in texts.uniques[distinct]]
    keys = texts.pandas(distinct).str.strip().str.casefold().str.replace(r"[\s_]+", " ", regex=True)
    return keys.tolist()


_SPACING_RE = re.compile(r"[\s_]+")
_PAIR_RE = re.compile(_PAIR)


def _pair_texts(texts: _Texts, distinct: np.ndarray, part: int) -> np.ndarray:
    """clean_sbp / clean_dbp's text per distinct text: one side of "SBP/DBP", else the text."""
    if texts.plain:
        out = []
        for u in texts.uniques[distinct]:
            match = _PAIR_RE.search(u)
            out.append(u if match is None else match.group(part + 1))
        return np.array(out, dtype=object)
    series = texts.pandas(distinct)
    pair = series.str.extract(_PAIR)[part]
    return pair.where(pair.notna(), series).astype(str).to_numpy(dtype=object)


# The unit each numeric channel's values are in for the model (mimic3-benchmarks' units), in UCUM,
# and the molar mass where a molar unit converts (glucose). A vitals.csv `unit` cell is converted to it.
CHANNEL_UNITS: dict[str, str] = {
    "Diastolic blood pressure": "mm[Hg]", "Systolic blood pressure": "mm[Hg]", "Mean blood pressure": "mm[Hg]",
    "Fraction inspired oxygen": "1", "Glucose": "mg/dL", "Heart Rate": "/min", "Height": "cm",
    "Oxygen saturation": "%", "Respiratory rate": "/min", "Temperature": "Cel", "Weight": "kg", "pH": "[pH]",
}
_MOLAR_MASS = {"Glucose": 180.156}


def _convert_units(name: str, values: np.ndarray, units: np.ndarray, file: str
                   ) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Values of rows with a unit converted to the channel's model unit; `not_used` per row and the
    warnings for units that are unknown or do not convert (value NaN then)."""
    values = values.copy()
    not_used = np.full(len(values), "", dtype=object)
    problems: list[Problem] = []
    model = CHANNEL_UNITS[name]
    for given in pd.unique(units[units != ""]):
        at = np.flatnonzero(units == given)
        ucum = to_ucum(given)
        try:
            if ucum is None:
                raise UnitProblem("unknown", "not a unit this reader knows")
            if name == "Temperature":
                values[at] = convert_array(values[at], ucum, model)
            else:
                values[at] = conversion(ucum, model, _MOLAR_MASS.get(name))(values[at])
        except UnitProblem as exc:
            not_used[at] = "unit unknown" if exc.kind == "unknown" or ucum is None else "unit incompatible"
            values[at] = np.nan
            problems.append(warning(file, f"{name}: unit",
                                    f"expected a unit convertible to {model}; found {given!r} in {_rows(len(at))} "
                                    f"({exc}); not used by the model"))
    return values, not_used, problems


def _numeric_array(name: str, texts: _Texts, rows: np.ndarray, has_unit: np.ndarray | None = None) -> np.ndarray:
    """Numbers for the texts of `rows` (all of one numeric channel), unit-cleaned where the benchmark
    cleans that channel: clean_sbp / clean_dbp (one side of "SBP/DBP", else the plain number),
    clean_fio2 (> 1 -> / 100), clean_o2sat (<= 1 -> * 100), clean_temperature (>= 79 -> Celsius)."""
    if name in ("Systolic blood pressure", "Diastolic blood pressure"):
        used = texts.codes[rows]
        distinct, inverse = np.unique(used, return_inverse=True)
        sides = _pair_texts(texts, distinct, 0 if name.startswith("Systolic") else 1)
        codes, uniques = pd.factorize(sides[inverse])
        number, integer, candidates = float_parts(np.asarray(uniques, dtype=object))
        return as_to_numeric_call(number, integer, candidates)[codes]
    value = texts.numbers(rows)
    guess = np.ones(len(rows), dtype=bool) if has_unit is None else ~has_unit  # a given unit replaces the guess
    with np.errstate(over="ignore"):  # a huge written number becomes +-inf, then an outlier (not used)
        if name == "Fraction inspired oxygen":
            return np.where(guess & (value > 1.0), value / 100.0, value)
        if name == "Oxygen saturation":
            return np.where(guess & (value <= 1.0), value * 100.0, value)
        if name == "Temperature":
            return np.where(guess & (value >= 79), (value - 32.0) * 5.0 / 9.0, value)
    return value


def _categorical_array(spec: VitalChannel, texts: _Texts, rows: np.ndarray, file: str) -> tuple[np.ndarray, list[Problem]]:
    """Scores for the texts of `rows` (all of one categorical channel) and a warning for unknown text.

    Text -> score through the channel's map (ignoring case and spacing); a bare number equal to one
    of the channel's scores counts too."""
    lookup = _category_lookup(spec.name)
    used = texts.codes[rows]
    distinct, inverse = np.unique(used, return_inverse=True)
    mapped = np.array([lookup.get(k, np.nan) for k in _category_keys(texts, distinct)], dtype="float64")
    number = texts.numbers(rows)
    is_score = np.isin(number, np.array(sorted(set(spec.value_map.values())), dtype="float64"))
    values = mapped[inverse]
    values = np.where(np.isnan(values), np.where(is_score, number, np.nan), values)
    unknown = np.isnan(values)
    if not unknown.any():
        return values, []
    expected = ", ".join(repr(t) for t in spec.value_map)
    message = (
        f"unknown category in {_rows(int(unknown.sum()))}: {_quote_counts(texts.at(rows[unknown]))}; "
        f"expected one of {expected} (or the score); kept with no value"
    )
    return values, [warning(file, f"{spec.name}: value", message)]


def _numeric_checked(spec: VitalChannel, texts: _Texts, rows: np.ndarray, file: str, units: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Problem]]:
    """Cleaned values clipped to the valid range, a mask of outlier rows (not used), `not_used` per row
    (a unit that does not convert) and the warnings (units; no number; outliers), for the texts of
    `rows` (all of one numeric channel) and their `units` as written."""
    has_unit = units != ""
    values = _numeric_array(spec.name, texts, rows, has_unit)
    problems: list[Problem] = []
    not_used = np.full(len(rows), "", dtype=object)
    if has_unit.any():
        values, not_used, problems = _convert_units(spec.name, values, units, file)
    not_number = np.isnan(values) & (not_used == "")
    if not_number.any():
        message = (f"no number in {_rows(int(not_number.sum()))}: {_quote_counts(texts.at(rows[not_number]))}; "
                   "kept with no value")
        problems.append(warning(file, f"{spec.name}: value", message))
    outlier = (values < spec.outlier_low) | (values > spec.outlier_high)
    if outlier.any():
        shown = pd.Series(values[outlier])
        problems.append(warning(file, f"{spec.name}: value", _outlier_message(spec, shown, texts.at(rows[outlier]))))
    clipped = np.where(np.isnan(values) | (values >= spec.valid_low), values, spec.valid_low)
    clipped = np.where(np.isnan(clipped) | (clipped <= spec.valid_high), clipped, spec.valid_high)
    return clipped, outlier, not_used, problems


def _value_arrays(channels: np.ndarray, texts: pd.Series, file: str, units: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Problem]]:
    """Value per row, a mask of outlier rows and `not_used` per row, channel by channel
    (order of first use)."""
    spec = channel_spec()
    n = len(texts)
    values = np.full(n, np.nan)
    drop = np.zeros(n, dtype=bool)
    not_used = np.full(n, "", dtype=object)
    problems: list[Problem] = []
    if n == 0:
        return values, drop, not_used, problems
    prepared = _Texts(texts)
    codes, names = pd.factorize(channels)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    for i, name in enumerate(names):
        rows = order[bounds[i]:bounds[i + 1]]
        if name not in spec:
            values[rows] = prepared.numbers(rows)
        elif spec[name].categorical:
            values[rows], found = _categorical_array(spec[name], prepared, rows, file)
            problems += found
        else:
            values[rows], drop[rows], not_used[rows], found = _numeric_checked(spec[name], prepared, rows, file,
                                                                               units[rows])
            problems += found
    return values, drop, not_used, problems


def vitals_from_table(raw: pd.DataFrame, file: str, clock=None) -> tuple[Vitals, list[Problem]]:
    """Read a vitals table (all-string cells) into `Vitals`, with the problems met on the way."""
    file = str(file)
    if len(raw.columns) == 0 and len(raw) == 0:
        return Vitals(), []
    table, problems = normalise_columns(raw, file)
    require_columns(table, file, ("time", "channel", "value"), _EXPECTED)
    times, time_problems = parse_times(table["time"], file, clock)
    problems += time_problems
    bad_time = times.isna().to_numpy(dtype=bool)
    stripped = stripped_cells(table["channel"])
    no_channel = (stripped == "") & ~bad_time
    problems += row_problems_at(file, bad_time, "time", TIME_EXPECTED, table["time"], "row dropped")
    problems += row_problems_at(
        file, no_channel, "channel", "a channel name like Heart Rate", table["channel"], "row dropped"
    )
    rows = np.flatnonzero(~bad_time & ~no_channel)
    channels, channel_problems = _channel_name_array(stripped[rows], file)
    texts = table["value"].iloc[rows]
    units = (stripped_cells(table["unit"]) if "unit" in table else np.full(len(table), "", dtype=object))[rows]
    values, outlier, not_used, value_problems = _value_arrays(channels, texts, file, units)
    problems += channel_problems + value_problems
    values = np.where(outlier, np.nan, values)  # kept for display and the coverage report, never read
    not_used = np.where(outlier, "implausible", not_used).astype(object)
    kept_times = times.iloc[rows]
    order, time_column = sort_by_time(kept_times)
    index = pd.RangeIndex(len(order))
    out = pd.DataFrame(
        {
            "time": time_column,
            "channel": pd.Series(channels[order], index=index, dtype=object),
            "value": values[order],
            "value_text": pd.Series(table["value"].to_numpy(dtype=object)[rows[order]], index=index, dtype=object),
            "unit": pd.Series(units[order], index=index, dtype=object),
            "not_used": pd.Series(not_used[order], index=index, dtype=object),
        },
        index=index,
    )
    return Vitals(out), problems
