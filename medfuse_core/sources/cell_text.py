"""The text cells of a CSV table (every cell read as a string) into numbers and per-row warnings.

The labs and the vitals tables (`labs.py`, `vitals.py`) read their cells through these: plain decimal
numbers with the exact results of one `pd.to_numeric(errors="coerce")` call, fast paths for printable
ASCII text, and one warning per bad row up to a limit. Row numbers in problems count data rows from 1.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from pandas._libs import lib

from medfuse_core.problems import Problem, warning

MAX_ROW_WARNINGS = 20  # per field; beyond this one summary warning, so a bad file gives a readable list

# A plain decimal number, optional minus sign and exponent. No leading "+": "+1" / "1+" are urine
# dipstick grades (ordinal), not quantities in the lab's unit, so they stay text with NaN value.
NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:E[+-]?\d+)?"
# A comma followed by exactly three digits is a thousands separator ("1,234"), not a list.
THOUSANDS = r"(?<=\d),(?=\d{3}(?:\D|$))"

_THOUSANDS_RE = re.compile(THOUSANDS)
_NUMBER_RE = re.compile(NUMBER, re.IGNORECASE)
_INT_TEXT_RE = re.compile(r"-?[0-9]+")
_INT_RANGE = (-(2**63), 2**64 - 1)  # integers pd.to_numeric keeps as integers


def number_values(candidates: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """`pd.to_numeric(errors="coerce")` as float64 of regex-checked number texts (None: no number).

    Also says which are integer texts: `pd.to_numeric` of texts that are all integers goes through
    int64, which turns "-0" into 0.0 (see `as_to_numeric_call`). Non-finite results stay as they are."""
    values = np.full(len(candidates), np.nan)
    integer = np.zeros(len(candidates), dtype=bool)
    other: list[int] = []
    for i, text in enumerate(candidates):
        if text is None:
            continue
        if text.isascii():  # the regexes admit only Python float literals here
            values[i] = float(text)
            integer[i] = _INT_TEXT_RE.fullmatch(text) is not None
        else:  # non-ASCII digits: left to pandas' own parser (which does not read them)
            other.append(i)
    if other:
        texts = pd.Series([candidates[i] for i in other] + [""], dtype=object)
        values[other] = pd.to_numeric(texts, errors="coerce").astype("float64").to_numpy()[:-1]
    return values, integer


def as_to_numeric_call(values: np.ndarray, integer: np.ndarray, candidates: list[str | None]) -> np.ndarray:
    """`values` of one `pd.to_numeric` call: all-integer texts give +0.0 for "-0"; then NaN if not finite."""
    if len(values) and integer.all() and np.signbit(values).any():
        if all(_INT_RANGE[0] <= int(t) <= _INT_RANGE[1] for t in candidates):
            values = values + 0.0  # -0.0 -> 0.0
    return np.where(np.isfinite(values), values, np.nan)


def _float_candidates(uniques: np.ndarray) -> list[str | None]:
    """The text `to_float` hands to pd.to_numeric per distinct (str) text, None where no number."""
    out: list[str | None] = []
    for text in uniques:
        text = text.strip()
        if "," in text:
            text = _THOUSANDS_RE.sub("", text)
        out.append(text if _NUMBER_RE.fullmatch(text) is not None else None)
    return out


def float_parts(uniques: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Per distinct str text: the number (before the whole-call rules), integer flag, candidate text."""
    candidates = _float_candidates(uniques)
    values, integer = number_values(candidates)
    return values, integer, candidates


def is_plain_text(texts: np.ndarray | list[str]) -> bool:
    """All characters printable ASCII. On such text pandas' string methods (pyarrow or Python) and
    Python's own agree: whitespace is " " only, \\d is [0-9], no line ends for "$"."""
    joined = "".join(texts)
    return joined.isascii() and joined.isprintable()


def str_cells(texts: pd.Series) -> np.ndarray | None:
    """The cells as an object array of str, None when some are missing or not text."""
    values = texts.to_numpy(dtype=object)
    return values if not len(values) or lib.is_string_array(values, skipna=False) else None


def stripped_cells(texts: pd.Series) -> np.ndarray:
    """`texts.str.strip()` as an object array, without the pandas call when the text is plain."""
    values = str_cells(texts)
    if values is not None and is_plain_text(values):
        return np.array([v.strip() for v in values], dtype=object)
    return texts.str.strip().to_numpy(dtype=object)


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


def row_problems_at(file: str, mask: np.ndarray, field: str, expected: str, found: pd.Series | np.ndarray,
                     outcome: str) -> list[Problem]:
    """`row_problems` for the rows of a RangeIndex table where `mask` holds."""
    if not mask.any():
        return []
    if not isinstance(found, pd.Series):
        found = pd.Series(found, dtype=object)
    return row_problems(file, pd.Index(np.flatnonzero(mask)), field, expected, found, outcome)
