"""Lab rows -> the tests of the lab vocabulary, in the model's units, with implausible values refused.

Run by `labs_from_table` on every table it reads (bundles, MIMIC, MEDS), so training and review see
the same numbers. Per row:
- the vocabulary test it names (`lab_vocabulary.match_test`: LOINC, then item id, then name); a
  matched row gets the test's MIMIC item id when it had none and its LOINC code when it had none;
- for a matched test, `value` (and the reference limits) converted from `unit` to the test's model
  unit (`units.py`), `value_unit` the model unit. Not converted, and `not_used` saying why, when the
  unit is missing where it matters ("unit missing"), not understood ("unit unknown") or of another
  kind ("unit incompatible");
- then the plausible range of the test (in its model unit): outside it, `not_used` = "implausible";
- for every row, a number that is not finite ("NaN", "inf", "1e999") is "implausible", a text
  result without a number is "no number".
Rows not used keep their text and unit as written; their `value` is NaN so nothing downstream can
read it by mistake. One warning per test and reason names the file, the field and what was expected.
Rows of tests outside the vocabulary keep their number and unit as written (`value_unit` = `unit`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from medfuse_core.problems import Problem, warning
from medfuse_core.sources.lab_vocabulary import LabTest, match_test
from medfuse_core.sources.units import UnitProblem, conversion, to_ucum

_EXAMPLES = 5
_NON_FINITE_RE = re.compile(r"^\s*[<>=≤≥]*\s*[+-]?(nan|inf|infinity|-?\d+(\.\d*)?e[+-]?\d{3,})\s*$", re.IGNORECASE)


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _shown(values: list[str]) -> str:
    counts = pd.Series(values, dtype=object).value_counts(sort=True)
    parts = [f"{v!r}" + (f" ({n})" if n > 1 else "") for v, n in counts.head(_EXAMPLES).items()]
    return ", ".join(parts) + (f" and {len(counts) - _EXAMPLES} more" if len(counts) > _EXAMPLES else "")


def _fmt(x: float) -> str:
    return f"{x:g}"


def harmonise_labs(table: pd.DataFrame, file: str) -> tuple[pd.DataFrame, list[Problem]]:
    """`table` (the Labs contract's columns, `loinc` as given, `value_unit`/`not_used` empty) harmonised."""
    n = len(table)
    if n == 0:
        return table, []
    table = table.copy()
    itemid = table["itemid"]
    item = table["item"].to_numpy(dtype=object)
    loinc = table["loinc"].to_numpy(dtype=object).copy()
    unit = table["unit"].to_numpy(dtype=object)
    value = table["value"].to_numpy(dtype="float64").copy()
    ref_low = table["ref_low"].to_numpy(dtype="float64").copy()
    ref_high = table["ref_high"].to_numpy(dtype="float64").copy()
    value_unit = unit.copy()
    not_used = np.full(n, "", dtype=object)
    texts = table["value_text"].to_numpy(dtype=object)
    problems: list[Problem] = []

    ids = itemid.astype("Int64")
    has_id = ids.notna().to_numpy()
    id_values = ids.fillna(0).to_numpy(dtype="int64")
    keys = pd.DataFrame({"loinc": loinc, "id": np.where(has_id, id_values, -1), "item": item})
    codes, distinct = pd.factorize(pd.MultiIndex.from_frame(keys))
    matched = [match_test(code, None if i < 0 else int(i), name) for code, i, name in distinct]
    tests: list[LabTest] = list(dict.fromkeys(t for t in matched if t is not None))
    position = {t.key: k for k, t in enumerate(tests)}
    test_of_distinct = np.array([-1 if t is None else position[t.key] for t in matched] + [-1], dtype=np.int64)
    test_of_row = test_of_distinct[codes]

    new_ids = ids.copy()
    for k, row_test in enumerate(tests):
        rows = np.flatnonzero(test_of_row == k)
        fill = rows[~has_id[rows]]
        if fill.size:
            new_ids.iloc[fill] = row_test.itemid
        loinc[rows[loinc[rows] == ""]] = row_test.primary_loinc
        problems += _convert_test(row_test, rows, unit, value, ref_low, ref_high, value_unit, not_used, texts,
                                  table["censored"].to_numpy(dtype=object), file)

    candidates = np.flatnonzero(np.isnan(value) & (not_used == ""))  # text results: usually few
    codes, distinct = pd.factorize(pd.Series(texts[candidates], dtype=object).astype(str))
    matched = np.array([bool(_NON_FINITE_RE.match(t)) for t in distinct] + [False], dtype=bool)[codes]
    non_finite = np.zeros(n, dtype=bool)
    non_finite[candidates[matched]] = True
    if non_finite.any():
        not_used[non_finite] = "implausible"
        problems.append(warning(file, "value", f"expected a finite number; found {_shown(list(texts[non_finite]))} in "
                                               f"{_rows(int(non_finite.sum()))}; not used by the model"))
    no_number = np.isnan(value) & (not_used == "")
    not_used[no_number] = "no number"
    value[not_used != ""] = np.nan
    table["itemid"] = new_ids.to_numpy()
    table["loinc"] = loinc
    table["value"] = value
    table["ref_low"] = ref_low
    table["ref_high"] = ref_high
    table["value_unit"] = value_unit
    table["not_used"] = not_used
    censored = table["censored"].to_numpy(dtype=object).copy()
    censored[not_used != ""] = ""
    table["censored"] = censored
    return table, problems


def _convert_test(test: LabTest, rows: np.ndarray, unit: np.ndarray, value: np.ndarray, ref_low: np.ndarray,
                  ref_high: np.ndarray, value_unit: np.ndarray, not_used: np.ndarray, texts: np.ndarray,
                  censored: np.ndarray, file: str) -> list[Problem]:
    """Convert the rows of one test in place; the warnings for what could not be used."""
    problems = []
    field = f"{test.name}: unit"
    numeric = rows[~np.isnan(value[rows])]
    for given in pd.unique(unit[rows]):
        at = rows[unit[rows] == given]
        at = np.intersect1d(at, numeric)  # text results ("HEMOLYZED") need no unit: they are "no number"
        if not at.size:
            continue
        given_text = str(given).strip()
        ucum = to_ucum(given_text)
        reason, why = "", ""
        if given_text == "" and test.unit_required:
            reason = "unit missing"
            why = (f"expected a unit for {test.name} (the model reads {test.unit}; {test.name} is also reported in "
                   f"other units, so a number alone is ambiguous); found none in {_rows(len(at))}")
        elif given_text == "":
            ucum = test.ucum
        elif ucum is None:
            reason = "unit unknown"
            why = f"expected a unit convertible to {test.unit}; found {given_text!r} in {_rows(len(at))}, not a unit this reader knows"
        if not reason:
            try:
                convert = conversion(ucum, test.ucum, test.molar_mass, test.valence, test.key)
            except UnitProblem as exc:
                reason = "unit unknown" if exc.kind == "unknown" else "unit incompatible"
                why = (f"expected a unit convertible to {test.unit}; found {given_text!r} in {_rows(len(at))}, "
                       f"which does not convert to it ({exc})")
        if reason:
            not_used[at] = reason
            value_unit[at] = given_text
            problems.append(warning(file, field, f"{why}; not used by the model"))
            continue
        value[at] = convert(value[at])
        ref_low[at] = convert(ref_low[at])
        ref_high[at] = convert(ref_high[at])
        value_unit[at] = test.unit
    checked = rows[(not_used[rows] == "") & ~np.isnan(value[rows])]
    implausible = checked[(value[checked] < test.plausible_low) | (value[checked] > test.plausible_high)
                          | ~np.isfinite(value[checked])]
    if implausible.size:
        not_used[implausible] = "implausible"
        shown = [f"{t} {u}".strip() for t, u in zip(texts[implausible], unit[implausible])]
        problems.append(warning(file, f"{test.name}: value",
                                f"expected a value between {_fmt(test.plausible_low)} and {_fmt(test.plausible_high)} "
                                f"{test.unit}; found {_shown(shown)} in {_rows(implausible.size)}; not used by the model"))
    return problems
