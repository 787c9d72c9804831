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
  `remove_outliers_for_variable`: outside [outlier_low, outlier_high] -> row dropped (one warning per
  channel), otherwise clipped to [valid_low, valid_high] silently, as the benchmark does; the raw
  text stays in `value_text`. Non-numeric text: value NaN, row kept, one warning per channel.
- Rows without a usable time or channel name are dropped with a warning per row.
Row numbers in problems count data rows from 1 (the header is not counted).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

import numpy as np
import pandas as pd

from medfuse_core.problems import Problem, warning
from medfuse_core.record import Vitals
from medfuse_core.sources.labs import (
    TIME_EXPECTED,
    normalise_columns,
    parse_times,
    require_columns,
    row_problems,
    to_float,
)
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


def _blood_pressure_part(part: int) -> Callable[[pd.Series], pd.Series]:
    def clean(texts: pd.Series) -> pd.Series:
        """clean_sbp / clean_dbp: one side of "SBP/DBP" text, plain numbers as they are."""
        pair = texts.str.extract(_PAIR)[part]
        return to_float(pair.where(pair.notna(), texts).astype(str))

    return clean


def _fio2(texts: pd.Series) -> pd.Series:
    """clean_fio2: FiO2 charted in percent -> fraction."""
    value = to_float(texts)
    return value.where(~(value > 1.0), value / 100.0)


def _o2sat(texts: pd.Series) -> pd.Series:
    """clean_o2sat: saturation charted as a fraction -> percent."""
    value = to_float(texts)
    return value.where(~(value <= 1.0), value * 100.0)


def _temperature(texts: pd.Series) -> pd.Series:
    """clean_temperature: values >= 79 can only be Fahrenheit -> Celsius."""
    value = to_float(texts)
    return value.where(~(value >= 79), (value - 32.0) * 5.0 / 9.0)


_CLEANERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "Systolic blood pressure": _blood_pressure_part(0),
    "Diastolic blood pressure": _blood_pressure_part(1),
    "Fraction inspired oxygen": _fio2,
    "Oxygen saturation": _o2sat,
    "Temperature": _temperature,
}


def _numeric_values(name: str, texts: pd.Series) -> pd.Series:
    """Numbers for a numeric channel, unit-cleaned where the benchmark cleans that channel."""
    return _CLEANERS.get(name, to_float)(texts)


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


def _category_values(spec: VitalChannel, texts: pd.Series) -> pd.Series:
    """Scores for category texts; a bare number equal to one of the channel's scores counts too."""
    lookup = _category_lookup(spec.name)
    keys = texts.str.strip().str.casefold().str.replace(r"[\s_]+", " ", regex=True)
    mapped = keys.map(lookup).astype("float64")
    number = to_float(texts)
    is_score = number.isin(set(spec.value_map.values()))
    return mapped.where(mapped.notna(), number.where(is_score))


def _quote_counts(texts: pd.Series) -> str:
    counts = texts.value_counts(sort=True)
    shown = [f"{text!r} ({n})" for text, n in counts.head(_EXAMPLES).items()]
    more = f" and {len(counts) - _EXAMPLES} more" if len(counts) > _EXAMPLES else ""
    return ", ".join(shown) + more


def _categorical(spec: VitalChannel, texts: pd.Series, file: str) -> tuple[pd.Series, list[Problem]]:
    values = _category_values(spec, texts)
    unknown = texts[values.isna()]
    if unknown.empty:
        return values, []
    expected = ", ".join(repr(t) for t in spec.value_map)
    message = (
        f"unknown category in {_rows(len(unknown))}: {_quote_counts(unknown)}; "
        f"expected one of {expected} (or the score); kept with no value"
    )
    return values, [warning(file, f"{spec.name}: value", message)]


# ---------------------------------------------------------------------------------------------
# Numeric channels
# ---------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:g}"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _numeric(spec: VitalChannel, texts: pd.Series, file: str) -> tuple[pd.Series, pd.Series, list[Problem]]:
    """Cleaned, clipped values and a mask of outlier rows to drop, for one numeric channel."""
    values = _numeric_values(spec.name, texts)
    problems = []
    not_number = values.isna()
    if not_number.any():
        message = f"no number in {_rows(int(not_number.sum()))}: {_quote_counts(texts[not_number])}; kept with no value"
        problems.append(warning(file, f"{spec.name}: value", message))
    outlier = (values < spec.outlier_low) | (values > spec.outlier_high)
    if outlier.any():
        problems.append(warning(file, f"{spec.name}: value", _outlier_message(spec, values[outlier], texts[outlier])))
    clipped = values.clip(lower=spec.valid_low, upper=spec.valid_high)
    return clipped, outlier, problems


def _outlier_message(spec: VitalChannel, values: pd.Series, texts: pd.Series) -> str:
    shown = []
    for value, text in list(zip(values, texts))[:_EXAMPLES]:
        shown.append(_fmt(value) if text.strip() == _fmt(value) else f"{_fmt(value)} (from {text.strip()!r})")
    more = ", ..." if len(values) > _EXAMPLES else ""
    return (
        f"{_rows(len(values))} dropped with a value outside the plausible range {_fmt(spec.outlier_low)} to "
        f"{_fmt(spec.outlier_high)}: {', '.join(shown)}{more}; values between that and the valid range "
        f"{_fmt(spec.valid_low)} to {_fmt(spec.valid_high)} are clipped to it"
    )


# ---------------------------------------------------------------------------------------------
# vitals.csv
# ---------------------------------------------------------------------------------------------


def _channel_names(raw_names: pd.Series, file: str) -> tuple[pd.Series, list[Problem]]:
    """Canonical names where known, the stripped name as written otherwise (one warning each)."""
    stripped = raw_names.str.strip()
    codes, uniques = pd.factorize(stripped)
    known = [canonical_channel(u) for u in uniques]
    names = pd.Series([k or u for k, u in zip(known, uniques)], dtype=object).iloc[codes]
    names.index = raw_names.index
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


def _values(channels: pd.Series, texts: pd.Series, file: str) -> tuple[pd.Series, pd.Series, list[Problem]]:
    """Value per row and a mask of rows to drop (outliers), channel by channel."""
    spec = channel_spec()
    values = pd.Series(np.nan, index=texts.index, dtype="float64")
    drop = pd.Series(False, index=texts.index)
    problems: list[Problem] = []
    for name, rows in channels.groupby(channels, sort=False).groups.items():
        part = texts.loc[rows]
        if name not in spec:
            values.loc[rows] = to_float(part)
        elif spec[name].categorical:
            values.loc[rows], found = _categorical(spec[name], part, file)
            problems += found
        else:
            values.loc[rows], drop.loc[rows], found = _numeric(spec[name], part, file)
            problems += found
    return values, drop, problems


def vitals_from_table(raw: pd.DataFrame, file: str) -> tuple[Vitals, list[Problem]]:
    """Read a vitals table (all-string cells) into `Vitals`, with the problems met on the way."""
    file = str(file)
    if len(raw.columns) == 0 and len(raw) == 0:
        return Vitals(), []
    table, problems = normalise_columns(raw, file)
    require_columns(table, file, ("time", "channel", "value"), _EXPECTED)
    times, time_problems = parse_times(table["time"], file)
    problems += time_problems
    bad_time = times.isna()
    no_channel = (table["channel"].str.strip() == "") & ~bad_time
    problems += row_problems(file, table.index[bad_time], "time", TIME_EXPECTED, table["time"], "row dropped")
    problems += row_problems(
        file, table.index[no_channel], "channel", "a channel name like Heart Rate", table["channel"], "row dropped"
    )
    kept = table[~bad_time & ~no_channel]
    channels, channel_problems = _channel_names(kept["channel"], file)
    values, outlier, value_problems = _values(channels, kept["value"], file)
    problems += channel_problems + value_problems
    out = pd.DataFrame(
        {"time": times[kept.index], "channel": channels, "value": values, "value_text": kept["value"]}
    )[~outlier]
    return Vitals(out.sort_values("time", kind="stable").reset_index(drop=True)), problems
