"""Import an EHR extract as patient bundles: one folder per record + cohort.json.

`python -m medfuse_core import mimic3|mimic4|meds --root DIR --out BUNDLES` calls `import_mimic3`,
`import_mimic4` or `import_meds`; all three write through `import_records`, so the bundles and the
summary have one form whatever the source. The bundles are then read like any other (`read_bundle`,
the dashboard's cohort browser, `validate`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from medfuse_core.runtime.cache import built_once
from medfuse_core.problems import DataError, Problem, Severity
from medfuse_core.record import MODALITIES
from medfuse_core.sources.bundle import write_bundle
from medfuse_core.sources.ehr_reader import ReaderStats
from medfuse_core.sources.mimic3 import Mimic3Reader
from medfuse_core.sources.phenotypes import MORTALITY

COHORT_FILE = "cohort.json"


@dataclass
class ImportSummary:
    """What an import found and wrote."""

    source: str
    out_dir: Path
    unit: str
    n: int
    label_names: list[str]
    label_counts: dict[str, int]
    modality_counts: dict[str, int]  # records that have the modality
    row_counts: dict[str, int]  # rows (labs, vitals) or notes imported over all records
    stats: ReaderStats  # or MedsStats (which brings its own summary_lines)
    problems: list[Problem] = field(default_factory=list)  # reader-level
    record_warnings: int = 0  # warnings on the records (age caps, missing diagnoses, ...)
    seconds: float = 0.0
    patients: list[str] = field(default_factory=list)
    kind: str = "mimic3"  # "mimic3" | "mimic4" | "meds": cohort.json's "source"

    @property
    def prevalence(self) -> dict[str, float]:
        return {k: (v / self.n if self.n else 0.0) for k, v in self.label_counts.items()}

    def to_json(self) -> dict[str, object]:
        """cohort.json: the same keys as the synthetic cohort's where they apply; no timings."""
        return {
            "source": self.kind,
            "root": self.source,
            "unit": self.unit,
            "n": self.n,
            "label_names": self.label_names,
            "diseases": [n for n in self.label_names if n != MORTALITY],
            "prevalence": {k: round(v, 4) for k, v in self.prevalence.items()},
            "label_counts": self.label_counts,
            "modality_counts": self.modality_counts,
            "row_counts": self.row_counts,
            "tables": self.stats.tables,
            "unmapped_codes": self.stats.unmapped(),
            "patients": self.patients,
        }

    def describe(self) -> str:
        s = self.stats
        lines = [f"{self.n} {self.unit} records from {self.source} written to {self.out_dir} in {self.seconds:.1f} s"]
        tables = ", ".join(f"{t} {f}" if f else f"{t} (absent)" for t, f in s.tables.items())
        lines.append(f"tables: {tables}")
        for modality in MODALITIES:
            rows = self.row_counts.get(modality)
            what = {"labs": "rows", "vitals": "rows", "notes": "notes", "image": "images"}[modality]
            extra = f", {rows} {what}" if rows is not None else ""
            lines.append(f"  {modality:7s} in {self.modality_counts.get(modality, 0)} of {self.n} records{extra}")
        if hasattr(s, "summary_lines"):
            lines += s.summary_lines()
        if not hasattr(s, "summary_lines") and s.lab_rows:
            lines.append(f"lab rows: {s.lab_rows} read, {s.lab_rows_placed} imported, {s.lab_rows_without_stay} without "
                         f"HADM_ID (outpatient), {s.lab_rows_unplaced} of no record read")
        unmapped = s.unmapped()
        if not hasattr(s, "summary_lines"):
            lines.append(f"vital rows: {s.vital_rows_from_labs} from LABEVENTS, {s.vital_rows_from_chartevents} from "
                         f"CHARTEVENTS (before outlier removal)")
        if hasattr(s, "image_rows") and s.image_rows:
            lines.append(f"chest X-rays: {s.image_rows} in the metadata, {s.image_rows_linked} in a record's stay, "
                         f"{s.images_missing} of those without a readable file")
        if not hasattr(s, "summary_lines"):
            mapped = unmapped["icd10_rows"] - unmapped["icd10_unmapped_rows"]
            lines.append(f"diagnoses: {s.diagnosis_rows} rows; ICD-10: {unmapped['icd10_rows']} rows, {mapped} mapped to "
                         f"ICD-9 by the CMS GEM, {unmapped['icd10_unmapped_rows']} not mapped"
                         + (f" (e.g. {', '.join(unmapped['icd10_unmapped_examples'])})"
                            if unmapped["icd10_unmapped_rows"] else "")
                         + f"; ICD-9 in no CCS group: {unmapped['unknown_icd9_rows']}"
                         + (f" (e.g. {', '.join(unmapped['unknown_icd9_examples'])})"
                            if unmapped["unknown_icd9_rows"] else ""))
        lines += [f"  {p:6.1%}  {name}" for name, p in self.prevalence.items()]
        n_errors = sum(p.severity is Severity.ERROR for p in self.problems)
        lines.append(f"{len(self.problems)} reader problem(s) ({n_errors} error(s)), {self.record_warnings} record warning(s)")
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def import_mimic3(
    root: str | Path,
    out_dir: str | Path,
    unit: str = "admission",
    limit: int | None = None,
    progress: bool = True,
) -> ImportSummary:
    """Write one bundle per record of `Mimic3Reader(root, unit, limit=limit)` and out_dir/cohort.json."""
    start = time.perf_counter()
    return import_records(Mimic3Reader(root, unit, limit=limit), "mimic3", root, out_dir, unit, progress, start)


def import_mimic4(
    root: str | Path,
    out_dir: str | Path,
    unit: str = "admission",
    limit: int | None = None,
    progress: bool = True,
    memory_limit: str = "2GB",
) -> ImportSummary:
    """Write one bundle per record of `Mimic4Reader(root, unit, limit, memory_limit)` and out_dir/cohort.json."""
    from medfuse_core.sources.mimic4 import Mimic4Reader

    start = time.perf_counter()
    reader = Mimic4Reader(root, unit, limit=limit, memory_limit=memory_limit)
    try:
        return import_records(reader, "mimic4", root, out_dir, unit, progress, start)
    finally:
        reader.close()


def import_meds(
    root: str | Path,
    out_dir: str | Path,
    unit: str = "subject",
    limit: int | None = None,
    progress: bool = True,
    memory_limit: str = "2GB",
) -> ImportSummary:
    """Write one bundle per record of `MedsReader(root, unit, limit, memory_limit)` and out_dir/cohort.json."""
    from medfuse_core.sources.meds import MedsReader

    start = time.perf_counter()
    reader = MedsReader(root, unit, limit=limit, memory_limit=memory_limit)
    try:
        return import_records(reader, "meds", root, out_dir, unit, progress, start)
    finally:
        reader.close()


def import_records(reader, kind: str, root: str | Path, out_dir: str | Path, unit: str, progress: bool = True,
                   start: float | None = None) -> ImportSummary:
    """Write one bundle per record of `reader` (len, iteration, label_names, stats, problems) + cohort.json."""
    start = time.perf_counter() if start is None else start
    out_dir = Path(out_dir)
    n = len(reader)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_counts = {name: 0 for name in reader.label_names}
    seen_labels: set[str] = set()
    modality_counts = {m: 0 for m in MODALITIES}
    row_counts = {"labs": 0, "vitals": 0, "notes": 0}
    n_images = 0
    record_warnings = 0
    patients = []
    for record in tqdm(reader, total=n, desc=f"import {unit}s", unit=unit, disable=not progress):
        write_bundle(record, out_dir / record.patient_id)
        patients.append(record.patient_id)
        for modality in record.present_modalities:
            modality_counts[modality] += 1
        row_counts["labs"] += len(record.labs.table)
        row_counts["vitals"] += len(record.vitals.table)
        row_counts["notes"] += len(record.notes)
        n_images += len(record.images)
        for name, value in (record.labels or {}).items():
            label_counts[name] = label_counts.get(name, 0) + int(value)
            seen_labels.add(name)
        record_warnings += len(record.problems)
    if n_images:
        row_counts["image"] = n_images
    # labels that no record has (no diagnoses, no mortality flag) are not in the cohort
    label_names = [name for name in label_counts if name in seen_labels]
    label_counts = {name: label_counts[name] for name in label_names}
    summary = ImportSummary(
        source=str(root), out_dir=out_dir, unit=unit, n=n, label_names=label_names, label_counts=label_counts,
        modality_counts=modality_counts, row_counts=row_counts, stats=reader.stats, problems=list(reader.problems),
        record_warnings=record_warnings, seconds=time.perf_counter() - start, patients=patients, kind=kind,
    )
    (out_dir / COHORT_FILE).write_text(json.dumps(summary.to_json(), indent=1) + "\n", encoding="utf-8")
    return summary


def imported_mimic3_dir(root: str | Path, cache_dir: str | Path) -> Path:
    """Bundles of the MIMIC-III tables in `root`, imported once into `cache_dir` and reused.

    The folder is keyed by the tables' resolved path and their files' sizes and mtimes, so changed
    tables are imported again. The import writes to a scratch folder renamed at the end, so a
    concurrent or interrupted import never leaves a half-written cohort behind.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(str(root), "", "expected a folder of MIMIC-III tables (ADMISSIONS.csv[.gz], ...)")
    fingerprint = hashlib.sha256(str(root).encode())
    for path in sorted(root.iterdir()):
        if path.is_file():
            stat = path.stat()
            fingerprint.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = Path(cache_dir) / f"mimic3-{fingerprint.hexdigest()[:16]}"
    return built_once(target, COHORT_FILE, lambda folder: import_mimic3(root, folder, progress=False))
