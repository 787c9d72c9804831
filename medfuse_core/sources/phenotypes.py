"""The 25 MedFuse / mimic3-benchmarks phenotypes: HCUP CCS 2015 groups of ICD-9 diagnosis codes.

Definitions come from the benchmark's `hcup_ccs_2015_definitions.yaml`, vendored unchanged (MIT
licence) in `medfuse_core/resources/mimic3_benchmarks/`; a test checks it is byte-identical to
`../shared/data/mimic3-benchmarks/`. The benchmark phenotypes are the groups with
`use_in_benchmark: True`, in sorted name order (the column order of the benchmark's label matrix).

Code matching is the benchmark's `add_hcup_ccs_2015_groups` (preprocessing.py): an exact string
match of the ICD-9 code as written in MIMIC-III DIAGNOSES_ICD.ICD9_CODE (no dots, leading zeros
kept: "0389", "V5861", "E8798"). Here codes are also stripped, upper-cased and un-dotted first, so
"428.0" matches "4280". ICD-10 codes (a version column says 10, or the code cannot be ICD-9: longer
than 5 characters, a first letter other than V/E, or a letter after the first character) are never
matched against ICD-9 groups. By default they are reported as unmapped; with `map_icd10=True`
(the MIMIC-IV and FHIR readers) they are taken to CCS groups through the CMS ICD-10-CM -> ICD-9-CM
GEM (`icd10_gem.py`, which documents the rule), and only codes the GEM does not map are reported.
The benchmark also drops diagnoses whose code is missing from D_ICD_DIAGNOSES (an inner join); that
is not done here: every coded diagnosis counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from medfuse_core.problems import DataError
from medfuse_core.sources.icd10_gem import icd10_to_ccs

MORTALITY = "In-hospital mortality"
DEFINITIONS_FILE = "hcup_ccs_2015_definitions.yaml"

_ICD9 = re.compile(r"^(?:\d{3,5}|V\d{2,4}|E\d{3,4})$")
_EXAMPLES = 10


@dataclass(frozen=True)
class PhenotypeDefinitions:
    """HCUP CCS groups: code -> group for every group, and the benchmark's 25 group names."""

    code_to_group: dict[str, str]
    groups: tuple[str, ...]  # every group, in file order
    benchmark: tuple[str, ...]  # the use_in_benchmark groups, sorted by name
    source: str = ""

    @property
    def label_names(self) -> tuple[str, ...]:
        """The 25 phenotypes then in-hospital mortality: the labels of a MIMIC-III record."""
        return self.benchmark + (MORTALITY,)


def _load_yaml(text: str) -> object:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster on 160 KB
    return yaml.load(text, Loader=loader)


def _parse_definitions(data: object, source: str) -> PhenotypeDefinitions:
    if not isinstance(data, dict):
        raise DataError(source, "", "expected a mapping of CCS group name -> {use_in_benchmark, codes}")
    code_to_group: dict[str, str] = {}
    benchmark = []
    for name, group in data.items():
        if not isinstance(group, dict) or not isinstance(group.get("codes"), list):
            raise DataError(source, str(name), "expected a mapping with a 'codes' list")
        if "use_in_benchmark" not in group:
            raise DataError(source, f"{name}.use_in_benchmark", "expected true or false")
        if group["use_in_benchmark"] is True:
            benchmark.append(str(name))
        for code in group["codes"]:
            # as the benchmark's def_map: a code listed under two groups belongs to the last one
            code_to_group[normalise_icd_code(str(code))] = str(name)
    return PhenotypeDefinitions(code_to_group, tuple(str(n) for n in data), tuple(sorted(benchmark)), source)


@cache
def _vendored_definitions() -> PhenotypeDefinitions:
    text = resources.files("medfuse_core.resources").joinpath("mimic3_benchmarks", DEFINITIONS_FILE).read_text()
    return _parse_definitions(_load_yaml(text), f"medfuse_core/resources/mimic3_benchmarks/{DEFINITIONS_FILE}")


def load_phenotype_definitions(path: str | Path | None = None) -> PhenotypeDefinitions:
    """The CCS definitions: the vendored copy by default, or the yaml file at `path`."""
    if path is None:
        return _vendored_definitions()
    path = Path(path)
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(str(path), "", f"expected YAML: {exc}") from None
    return _parse_definitions(data, str(path))


def benchmark_phenotypes() -> tuple[str, ...]:
    """The 25 benchmark phenotype names, sorted."""
    return _vendored_definitions().benchmark


def normalise_icd_code(code: str) -> str:
    """"428.0 " -> "4280": stripped, upper-cased, dots removed (MIMIC-III stores codes without dots)."""
    return str(code).strip().upper().replace(".", "")


def looks_like_icd10(code: str) -> bool:
    """True when a normalised code cannot be ICD-9 (ICD-9: 3-5 digits, V + 2-4 digits, E + 3-4 digits).

    Short ICD-10 codes that are also valid ICD-9 syntax ("V1046", "E870") cannot be told apart by
    their text; give a version column for those.
    """
    return bool(code) and not _ICD9.match(code)


@dataclass
class PhenotypeMatch:
    """Phenotype labels for one stay's diagnoses, and the codes that could not be used."""

    labels: dict[str, int]
    groups: dict[str, str] = field(default_factory=dict)  # code -> CCS group (any group) for matched ICD-9 codes
    icd10: list[str] = field(default_factory=list)  # ICD-10 codes seen
    icd10_unmapped: list[str] = field(default_factory=list)  # ICD-10 codes not mapped (all of them unless map_icd10)
    icd10_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mapped ICD-10 code -> CCS groups
    unknown: list[str] = field(default_factory=list)  # ICD-9-looking codes in no CCS group


def match_phenotypes(
    codes: Iterable[str],
    versions: Iterable[object] | None = None,
    definitions: PhenotypeDefinitions | None = None,
    map_icd10: bool = False,
) -> PhenotypeMatch:
    """Map diagnosis codes to the benchmark phenotypes; `versions` (9/10 per code) where known.

    ICD-10 codes go through the CMS GEM when `map_icd10` (see `icd10_gem.py`), else they are unmapped.
    """
    definitions = definitions or _vendored_definitions()
    codes = [normalise_icd_code(c) for c in codes if c is not None and str(c).strip()]
    version_list = [str(v).strip() for v in versions] if versions is not None else [""] * len(codes)
    labels = {name: 0 for name in definitions.benchmark}
    out = PhenotypeMatch(labels)
    benchmark = set(definitions.benchmark)
    for code, version in zip(codes, version_list):
        if version.startswith("10") or (not version.startswith("9") and looks_like_icd10(code)):
            out.icd10.append(code)
            mapped = icd10_to_ccs(code, definitions.code_to_group) if map_icd10 else None
            if mapped is None:
                out.icd10_unmapped.append(code)
                continue
            out.icd10_groups[code] = tuple(sorted(mapped))
            for group in mapped & benchmark:
                labels[group] = 1
            continue
        group = definitions.code_to_group.get(code)
        if group is None:
            out.unknown.append(code)
            continue
        out.groups[code] = group
        if group in benchmark:
            labels[group] = 1
    return out


def phenotype_labels(icd9_codes: Iterable[str], definitions: PhenotypeDefinitions | None = None) -> dict[str, int]:
    """name -> 0/1 for the 25 benchmark phenotypes, from one stay's ICD-9 codes."""
    return match_phenotypes(icd9_codes, definitions=definitions).labels


def examples(codes: Iterable[str], n: int = _EXAMPLES) -> list[str]:
    """Up to `n` distinct codes, most frequent first (for messages and summaries)."""
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
