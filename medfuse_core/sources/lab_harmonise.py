"""Lab rows -> the tests of the lab vocabulary, in the model's units, with implausible values refused.

Run by `labs_from_table` (`harmonise_arrays`) on every table it reads (bundles, MIMIC, MEDS), so training and review see
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
from dataclasses import dataclass

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


@dataclass
class LabArrays:
    """A labs table's columns as numpy arrays (row-aligned); itemid -1 where unknown."""

    itemid: np.ndarray  # int64
    item: np.ndarray  # object (str)
    loinc: np.ndarray
    unit: np.ndarray
    value: np.ndarray  # float64
    value_text: np.ndarray
    censored: np.ndarray
    ref_low: np.ndarray
    ref_high: np.ndarray
    value_unit: np.ndarray | None = None  # set by harmonise_arrays
    not_used: np.ndarray | None = None


def harmonise_arrays(labs: LabArrays, file: str) -> tuple[LabArrays, list[Problem]]:
    """The rows harmonised (see the module docstring): new arrays, and the warnings. Plain numpy and a
    memo per distinct (loinc, itemid, name): bundles are read one small table at a time, where pandas'
    per-call overhead would dominate."""
    n = len(labs.value)
    ids = labs.itemid.copy()
    no_id = ids < 0
    loinc = labs.loinc.copy()
    unit = labs.unit
    value = labs.value.copy()
    ref_low = labs.ref_low.copy()
    ref_high = labs.ref_high.copy()
    texts = labs.value_text
    value_unit = unit.copy()
    not_used = np.full(n, "", dtype=object)
    problems: list[Problem] = []

    tests: list[LabTest] = []
    position: dict[str, int] = {}
    memo: dict[tuple, int] = {}
    test_of_row = np.empty(n, dtype=np.int64)
    for r, key in enumerate(zip(loinc.tolist(), ids.tolist(), labs.item.tolist())):
        k = memo.get(key)
        if k is None:
            test = match_test(key[0], None if key[1] < 0 else key[1], key[2])
            if test is None:
                k = -1
            else:
                k = position.setdefault(test.key, len(tests))
                if k == len(tests):
                    tests.append(test)
            memo[key] = k
        test_of_row[r] = k

    for k, row_test in enumerate(tests):
        rows = np.flatnonzero(test_of_row == k)
        ids[rows[no_id[rows]]] = row_test.itemid
        loinc[rows[loinc[rows] == ""]] = row_test.primary_loinc
        problems += _convert_test(row_test, rows, unit, value, ref_low, ref_high, value_unit, not_used, texts, file)

    candidates = np.flatnonzero(np.isnan(value) & (not_used == ""))  # text results: usually few
    if candidates.size:
        seen: dict[str, bool] = {}
        for t in map(str, texts[candidates]):
            if t not in seen:
                seen[t] = bool(_NON_FINITE_RE.match(t))
        non_finite = candidates[np.array([seen[str(t)] for t in texts[candidates]], dtype=bool)]
        if non_finite.size:
            not_used[non_finite] = "implausible"
            problems.append(warning(file, "value", f"expected a finite number; found {_shown(list(texts[non_finite]))} "
                                                   f"in {_rows(non_finite.size)}; not used by the model"))
    not_used[np.isnan(value) & (not_used == "")] = "no number"
    unused = not_used != ""
    value[unused] = np.nan
    censored = labs.censored.copy()
    censored[unused] = ""
    return LabArrays(itemid=ids, item=labs.item, loinc=loinc, unit=unit, value=value, value_text=texts,
                     censored=censored, ref_low=ref_low, ref_high=ref_high, value_unit=value_unit,
                     not_used=not_used), problems


def _convert_test(test: LabTest, rows: np.ndarray, unit: np.ndarray, value: np.ndarray, ref_low: np.ndarray,
                  ref_high: np.ndarray, value_unit: np.ndarray, not_used: np.ndarray, texts: np.ndarray,
                  file: str) -> list[Problem]:
    """Convert the rows of one test in place; the warnings for what could not be used."""
    problems = []
    field = f"{test.name}: unit"
    numeric = rows[~np.isnan(value[rows])]  # text results ("HEMOLYZED") need no unit: they are "no number"
    by_unit: dict[str, list[int]] = {}
    for r, given in zip(numeric.tolist(), unit[numeric].tolist()):
        by_unit.setdefault(given, []).append(r)
    for given, at_list in by_unit.items():
        at = np.asarray(at_list, dtype=np.int64)
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
        if convert.scale != 1.0 or convert.offset != 0.0:
            value[at] = convert(value[at])
            ref_low[at] = convert(ref_low[at])
            ref_high[at] = convert(ref_high[at])
        value_unit[at] = test.unit
    checked = numeric[not_used[numeric] == ""]
    x = value[checked]
    implausible = checked[(x < test.plausible_low) | (x > test.plausible_high) | ~np.isfinite(x)]
    if implausible.size:
        not_used[implausible] = "implausible"
        shown = [f"{t} {u}".strip() for t, u in zip(texts[implausible], unit[implausible])]
        problems.append(warning(file, f"{test.name}: value",
                                f"expected a value between {_fmt(test.plausible_low)} and {_fmt(test.plausible_high)} "
                                f"{test.unit}; found {_shown(shown)} in {_rows(implausible.size)}; not used by the model"))
    return problems
