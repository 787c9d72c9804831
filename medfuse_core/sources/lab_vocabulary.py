"""The lab tests MEDFuse Lens knows, keyed by LOINC: `resources/lab_vocabulary.csv` (provenance in
`resources/lab_vocabulary.md`).

Each row is one test the demo model reads, under its MIMIC-III D_LABITEMS id (the key the model's
vocabulary uses, "itemid:50931"), with its LOINC code(s), MIMIC-III and MIMIC-IV item ids, the names
real systems print (MIMIC labels, eICU names such as "BUN" or "WBC x 1000", LOINC long names as
FHIR/Synthea write them), the unit the model was trained on, the molar mass that converts molar to
mass units, and the range of values a living patient can have (outside it a value is a typing or
unit error, never evidence).

A labs.csv row is matched to a test, first rule that applies:
1. a LOINC code in the `loinc` column, or in `itemid` (bare "2345-7" or with its system:
   "http://loinc.org|2345-7", "LOINC:2345-7", "LN 2345-7");
2. an integer `itemid` (MIMIC-III or MIMIC-IV id): only that id is looked at; an id the table does
   not list is left to the checkpoint (a MIMIC-trained model may know it), never guessed from the name;
3. the `item` name, ignoring case, spacing and punctuation ("WBC x 1000" ~ "wbc x1000").
A LOINC code the table does not list is not matched by name either (it names another test).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

VOCABULARY_FILE = "lab_vocabulary.csv"

# A LOINC code: 1-7 digits, a hyphen, one check digit; optionally after its system name.
_LOINC_RE = re.compile(r"^\s*(?:(?:https?://)?(?:loinc(?:\.org)?|ln)\s*[|:/#\s]\s*)?(\d{1,7}-\d)\s*$", re.IGNORECASE)
_NAME_SPLIT_RE = re.compile(r"[^0-9a-z%]+")


@dataclass(frozen=True)
class LabTest:
    """One lab test of the vocabulary (a row of lab_vocabulary.csv)."""

    key: str  # the model vocabulary key, "itemid:50931"
    itemid: int  # MIMIC-III D_LABITEMS id (canonical)
    name: str  # MIMIC label, as the model's vocabulary names it
    loinc: tuple[str, ...]  # LOINC codes, first the one of the model's unit (MIMIC-III D_LABITEMS's is among them)
    loinc_names: tuple[str, ...]  # LOINC long common names of those codes
    mimic3_itemids: tuple[int, ...]
    mimic4_itemids: tuple[int, ...]
    unit: str  # the unit the model was trained on, as written in training ("K/uL")
    ucum: str  # the same unit in UCUM ("10*3/uL")
    unit_required: bool  # False where a number has one meaning without a unit (pH; mEq/L = mmol/L ions)
    molar_mass: float | None  # g/mol of the analyte as the mass unit counts it (BUN: 28.014, N2 per urea)
    valence: int | None  # equivalents per mole (Ca, Mg: 2), for mEq units
    plausible_low: float  # in `unit`; outside [low, high] a value is not read
    plausible_high: float
    aliases: tuple[str, ...]

    @property
    def primary_loinc(self) -> str:
        return self.loinc[0]

    def plausible(self, value: float) -> bool:
        return self.plausible_low <= value <= self.plausible_high


def name_key(text: str) -> str:
    """Comparison key of a test name: case, spacing and punctuation ignored ("WBC x 1000" -> "wbc x 1000")."""
    return " ".join(part for part in _NAME_SPLIT_RE.split(str(text).casefold()) if part)


def loinc_code(text: str) -> str | None:
    """The LOINC code in `text` ("2345-7", "http://loinc.org|2345-7", "LOINC:2345-7"), None if there is none."""
    match = _LOINC_RE.match(str(text))
    return match.group(1) if match else None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split("|") if t.strip())


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def lab_tests() -> tuple[LabTest, ...]:
    """The vocabulary's tests, in file order."""
    text = resources.files("medfuse_core.resources").joinpath(VOCABULARY_FILE).read_text(encoding="utf-8")
    out = []
    for row in csv.DictReader(text.splitlines()):
        out.append(LabTest(
            key=row["key"], itemid=int(row["key"].split(":")[1]), name=row["name"],
            loinc=tuple(row["loinc"].split("|")), loinc_names=tuple(row["loinc_names"].split("|")),
            mimic3_itemids=_ints(row["mimic3_itemids"]), mimic4_itemids=_ints(row["mimic4_itemids"]),
            unit=row["unit"], ucum=row["ucum"], unit_required=row["unit_required"] == "yes",
            molar_mass=_float(row["molar_mass_g_mol"]),
            valence=None if not row["valence"].strip() else int(row["valence"]),
            plausible_low=float(row["plausible_low"]), plausible_high=float(row["plausible_high"]),
            aliases=tuple(a for a in row["aliases"].split("|") if a),
        ))
    return tuple(out)


@dataclass(frozen=True)
class _Index:
    by_loinc: dict[str, LabTest]
    by_itemid: dict[int, LabTest]
    by_name: dict[str, LabTest]


@cache
def _index() -> _Index:
    by_loinc: dict[str, LabTest] = {}
    by_itemid: dict[int, LabTest] = {}
    by_name: dict[str, LabTest] = {}
    for test in lab_tests():
        for code in test.loinc:
            if by_loinc.setdefault(code, test) is not test:
                raise ValueError(f"{VOCABULARY_FILE}: LOINC {code} is listed for two tests")
        for itemid in (test.itemid, *test.mimic3_itemids, *test.mimic4_itemids):
            if by_itemid.setdefault(itemid, test) is not test:
                raise ValueError(f"{VOCABULARY_FILE}: itemid {itemid} is listed for two tests")
        for name in (test.name, *test.loinc_names, *test.aliases):
            key = name_key(name)
            if by_name.setdefault(key, test) is not test:
                raise ValueError(f"{VOCABULARY_FILE}: the name {name!r} is listed for two tests")
    return _Index(by_loinc, by_itemid, by_name)


def by_loinc(code: str) -> LabTest | None:
    return _index().by_loinc.get(code)


def by_itemid(itemid: int) -> LabTest | None:
    return _index().by_itemid.get(int(itemid))


def by_name_key(name: str) -> LabTest | None:
    return _index().by_name.get(name_key(name))


def match_test(loinc: str, itemid: int | None, name: str) -> LabTest | None:
    """The vocabulary test a row names (rules in the module docstring), None if none."""
    if loinc:
        return by_loinc(loinc)
    if itemid is not None:
        return by_itemid(itemid)
    return by_name_key(name) if name else None


def markdown_table() -> str:
    """The README's list of the tests the demo model reads (generated; a test keeps the README in step)."""
    lines = ["| test | LOINC | MIMIC-III / IV item id | model unit | unit needed | molar mass (g/mol) | plausible range "
             "| names also matched |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for test in lab_tests():
        ids = sorted(set(test.mimic3_itemids) | set(test.mimic4_itemids))
        mass = "" if test.molar_mass is None else f"{test.molar_mass:g}"
        lines.append(f"| {test.name} | {', '.join(test.loinc)} | {', '.join(map(str, ids))} | {test.unit} | "
                     f"{'yes' if test.unit_required else 'no'} | {mass} | {test.plausible_low:g} to "
                     f"{test.plausible_high:g} | {', '.join(test.aliases)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
