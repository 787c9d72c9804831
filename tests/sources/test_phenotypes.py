"""The 25 mimic3-benchmarks phenotypes: vendored definitions and ICD-9 code matching."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from medfuse_core.problems import DataError
from medfuse_core.sources.icd10_gem import icd10_to_ccs
from medfuse_core.sources.phenotypes import (
    MORTALITY,
    benchmark_phenotypes,
    load_phenotype_definitions,
    looks_like_icd10,
    match_phenotypes,
    normalise_icd_code,
    phenotype_labels,
)

YAML = "hcup_ccs_2015_definitions.yaml"


def vendored_bytes() -> bytes:
    return resources.files("medfuse_core.resources").joinpath("mimic3_benchmarks", YAML).read_bytes()


def test_vendored_definitions_are_byte_identical_to_shared(shared_data: Path) -> None:
    assert vendored_bytes() == (shared_data / "mimic3-benchmarks" / YAML).read_bytes()


def test_twenty_five_benchmark_phenotypes_sorted() -> None:
    raw = yaml.safe_load(vendored_bytes())
    expected = sorted(name for name, group in raw.items() if group["use_in_benchmark"] is True)
    assert len(expected) == 25
    assert list(benchmark_phenotypes()) == expected
    assert load_phenotype_definitions().label_names == tuple(expected) + (MORTALITY,)
    assert MORTALITY == "In-hospital mortality"


def test_explicit_path_gives_the_same_definitions(shared_data: Path) -> None:
    explicit = load_phenotype_definitions(shared_data / "mimic3-benchmarks" / YAML)
    default = load_phenotype_definitions()
    assert explicit.benchmark == default.benchmark
    assert explicit.code_to_group == default.code_to_group


def test_exact_code_matching_as_the_benchmark() -> None:
    labels = phenotype_labels(["0389", "4280", "V5861"])
    assert labels["Septicemia (except in labor)"] == 1
    assert labels["Congestive heart failure; nonhypertensive"] == 1
    assert sum(labels.values()) == 2  # V5861 (long-term anticoagulants) is in no benchmark group
    assert set(labels) == set(benchmark_phenotypes())
    # exact strings: "038" (a 3-digit parent that MIMIC never codes) is not a prefix match
    assert phenotype_labels(["038"])["Septicemia (except in labor)"] == 0


def test_dotted_and_spaced_codes_are_normalised() -> None:
    assert normalise_icd_code(" 428.0 ") == "4280"
    assert phenotype_labels(["038.9", "e879.8"])["Septicemia (except in labor)"] == 1


def test_icd10_codes_are_reported_not_mapped() -> None:
    match = match_phenotypes(["I10", "J18.9", "A41.9", "4019"])
    assert match.icd10 == ["I10", "J189", "A419"]
    assert match.labels["Essential hypertension"] == 1
    assert match.labels["Pneumonia (except that caused by tuberculosis or sexually transmitted disease)"] == 0
    # a version column decides where the text cannot ("4019" is never ICD-10, but trust the column)
    flagged = match_phenotypes(["4019", "0389"], versions=["10", "9"])
    assert flagged.icd10 == ["4019"] and flagged.labels["Essential hypertension"] == 0
    assert flagged.labels["Septicemia (except in labor)"] == 1


@pytest.mark.parametrize("code,icd10", [("4019", False), ("V5861", False), ("E8798", False), ("038", False),
                                         ("I10", True), ("J189", True), ("Z7901", True), ("E11A", True),
                                         ("V0001XA", True)])
def test_icd10_shape(code: str, icd10: bool) -> None:
    assert looks_like_icd10(code) is icd10


def test_unknown_icd9_codes_are_reported() -> None:
    definitions = load_phenotype_definitions()
    assert "99999" not in definitions.code_to_group
    match = match_phenotypes(["99999", "", "4019"])
    assert match.unknown == ["99999"] and match.icd10 == []


def test_malformed_definitions_raise_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "defs.yaml"
    bad.write_text('"Shock":\n  codes: ["78551"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="use_in_benchmark"):
        load_phenotype_definitions(bad)


# ------------------------------------------------------------------ ICD-10 through the CMS GEM


@pytest.mark.parametrize("code,groups", [
    ("I10", {"Essential hypertension"}),  # 401.1/401.9 essential, 401.0 malignant (complications): majority
    ("E119", {"Diabetes mellitus without complication"}),
    ("E1122", {"Diabetes mellitus with complications"}),
    ("N179", {"Acute and unspecified renal failure"}),
    ("J449", {"Chronic obstructive pulmonary disease and bronchiectasis"}),  # 2 of 3 alternatives (1 asthma)
    ("A021", {"Septicemia (except in labor)"}),  # combination: 003.1 + 995.91
])
def test_icd10_codes_map_to_ccs_groups_through_the_gem(code: str, groups: set[str]) -> None:
    definitions = load_phenotype_definitions()
    assert icd10_to_ccs(code, definitions.code_to_group) == groups


def test_icd10_tie_keeps_every_tied_group() -> None:
    # I25.10 -> 414.01 (coronary atherosclerosis) or 429.2 (other heart disease): one each
    groups = icd10_to_ccs("I2510", load_phenotype_definitions().code_to_group)
    assert groups == {"Coronary atherosclerosis and other heart disease", "Other and ill-defined heart disease"}


def test_icd10_codes_the_gem_does_not_map_are_none() -> None:
    code_to_group = load_phenotype_definitions().code_to_group
    assert icd10_to_ccs("R402130", code_to_group) is None  # a no_map row of the GEM
    assert icd10_to_ccs("E7800", code_to_group) is None  # created after the 2018 GEM
    assert icd10_to_ccs("XYZ", code_to_group) is None


def test_match_phenotypes_maps_icd10_only_when_asked() -> None:
    codes, versions = ["I10", "E78.00", "4280"], [10, 10, 9]
    plain = match_phenotypes(codes, versions)
    assert plain.icd10 == plain.icd10_unmapped == ["I10", "E7800"] and plain.labels["Essential hypertension"] == 0
    mapped = match_phenotypes(codes, versions, map_icd10=True)
    assert mapped.icd10 == ["I10", "E7800"] and mapped.icd10_unmapped == ["E7800"]
    assert mapped.icd10_groups == {"I10": ("Essential hypertension",)}
    assert mapped.labels["Essential hypertension"] == 1 and mapped.labels["Congestive heart failure; nonhypertensive"] == 1
    assert sum(mapped.labels.values()) == 2
