"""Bundle validation: every problem a reader would meet, plus checks of truth.json against the data.

Used by `python -m medfuse_core validate DIR` and by the dashboard's upload page, so the messages
are written for a person: file, field, what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medfuse_core.modalities import REGISTRY
from medfuse_core.problems import DataError, Problem, Severity, error, info, warning
from medfuse_core.record import PatientRecord
from medfuse_core.sources import bundle as B

KNOWN_TOP_LEVEL = {B.PATIENT_FILE, B.LABS_FILE, B.VITALS_FILE, B.NOTES_DIR, B.IMAGES_DIR, B.TRUTH_FILE, "truth"}
# Tags that mark a note as HTML (a pasted web page, a script). Such a note is kept as plain text: the
# dashboard escapes every character of it, so this is worth knowing, not an error.
_HTML_TAG = re.compile(
    r"<\s*/?\s*(script|iframe|object|embed|style|html|head|body|div|span|table|tr|td|th|font|form|input|img|svg|"
    r"link|meta|base|a|b|i|u|p|br|hr|strong|em|ul|ol|li|h[1-6])\b[^<>]*>", re.IGNORECASE)
_BUNDLE_PARTS = (B.PATIENT_FILE, B.LABS_FILE, B.VITALS_FILE)  # notes/, images/ alone are too common a name


@dataclass
class BundleReport:
    """What validation found in one bundle folder."""

    folder: Path
    patient_id: str | None = None
    modalities: tuple[str, ...] = ()
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_bundle(folder: str | Path) -> tuple[BundleReport, PatientRecord | None]:
    """Read one bundle and check it; the record is returned for callers that go on to use it."""
    folder = Path(folder)
    report = BundleReport(folder)
    try:
        record = B.read_bundle(folder)
    except DataError as exc:
        report.problems.append(exc.problem)
        return report, None
    except Exception as exc:  # RecursionError included: a reader bug must cost this bundle only, never the cohort
        report.problems.append(error(str(folder), "", f"could not be read ({type(exc).__name__}); "
                                                      "the bundle is left out"))
        return report, None
    report.patient_id = record.patient_id
    report.modalities = record.present_modalities
    report.problems.extend(record.problems)
    report.problems.extend(_unknown_entries(folder))
    report.problems.extend(markup_problems(record))
    if record.truth is not None:
        report.problems.extend(check_truth(record, folder))
    return report, record


def validate_tree(root: str | Path,
                  on_record: Callable[[BundleReport, PatientRecord], None] | None = None) -> list[BundleReport]:
    """Validate `root` (one bundle, or a folder of bundles); duplicate patient ids are errors.
    `on_record` is called with each readable bundle's report and record as it is read (the CLI's
    coverage report), so records need not be kept."""
    root = Path(root)
    if not root.exists():
        return [BundleReport(root, problems=[error(str(root), "", "expected an existing folder")])]
    folders = find_bundle_folders(root)
    if not folders:
        return [BundleReport(root, problems=[error(str(root), "", "expected a bundle (a folder with patient.json) or a folder of bundles; found none")])]
    reports = []
    for folder in folders:
        report, record = validate_bundle(folder)
        if on_record is not None and record is not None:
            on_record(report, record)
        reports.append(report)
    for report, problem in duplicate_id_problems(reports, root):
        report.problems.append(problem)
    return reports


def duplicate_id_problems(reports: list[BundleReport], root: Path) -> list[tuple[BundleReport, Problem]]:
    """An error for every bundle whose patient id another bundle also uses, naming the other folders
    (relative to `root`): a worklist row could open either, so callers refuse them all."""
    by_id: dict[str, list[BundleReport]] = {}
    for report in reports:
        if report.patient_id:
            by_id.setdefault(report.patient_id, []).append(report)
    out = []
    for patient_id, group in by_id.items():
        if len(group) < 2:
            continue
        for report in group:
            others = [_relative(r.folder, root) for r in group if r is not report]
            out.append((report, error(str(report.folder / B.PATIENT_FILE), "patient_id",
                                      f"expected unique patient ids; {patient_id!r} occurs {len(group)} times "
                                      f"(also in {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})")))
    return out


def _relative(folder: Path, root: Path) -> str:
    try:
        return Path(folder).relative_to(root).as_posix() or "."
    except ValueError:
        return Path(folder).name


def markup_problems(record: PatientRecord) -> list[Problem]:
    """An info problem for each note that holds HTML tags: kept and shown as plain text, never rendered."""
    out = []
    for note in record.notes:
        tags = sorted({m.group(1).lower() for m in _HTML_TAG.finditer(note.text)})
        if tags:
            shown = ", ".join(f"<{t}>" for t in tags[:6]) + (", ..." if len(tags) > 6 else "")
            out.append(info(note.source, "text", f"contains HTML tags ({shown}); kept as plain text: shown as "
                                                 "written, never rendered or run"))
    return out


def _looks_like_bundle(folder: Path) -> bool:
    return any((folder / part).exists() or (folder / part).is_symlink() for part in _BUNDLE_PARTS)


def find_bundle_folders(root: str | Path) -> list[Path]:
    """Folders that are, or look like, bundles: with patient.json, or with a bundle's labs.csv or
    vitals.csv but no patient.json (validating one of those reports the missing file,
    where `find_bundles` would pass it over in silence). Sorted; nothing inside a bundle counts, and
    links to folders are not followed."""
    root = Path(root)
    found: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        if _looks_like_bundle(folder):
            found.append(folder)
            continue
        try:
            children = [c for c in folder.iterdir() if c.is_dir() and not c.is_symlink()]
        except OSError:
            continue
        pending.extend(sorted(children, reverse=True))
    return sorted(found)


def _known_top_level() -> set[str]:
    """The bundle's entries: the built-in files and every registered modality's (medfuse_core/modalities.py)."""
    registered = {name.rstrip("/").split("/")[0] for spec in REGISTRY for name in spec.bundle_files}
    return KNOWN_TOP_LEVEL | registered


def _unknown_entries(folder: Path) -> list[Problem]:
    known = _known_top_level()
    return [
        warning(str(entry), "", f"unexpected entry ignored; a bundle holds {', '.join(sorted(known - {'truth'}))}")
        for entry in sorted(folder.iterdir())
        if entry.name not in known and not entry.name.startswith(".")
    ]


def check_truth(record: PatientRecord, folder: Path) -> list[Problem]:
    """truth.json must point at evidence that is really in the bundle."""
    truth = record.truth or {}
    file = str(folder / B.TRUTH_FILE)
    problems: list[Problem] = []
    notes_by_file = {Path(n.source).name: n.text for n in record.notes}
    image_files = {Path(i.source).name for i in record.images}
    lab_items = set(record.labs.table["itemid"].dropna().astype(int)) | set(record.labs.table["item"])
    for disease, evidence in (truth.get("evidence") or {}).items():
        for i, span in enumerate(evidence.get("notes", [])):
            where = f"evidence.{disease}.notes[{i}]"
            text = notes_by_file.get(Path(str(span.get("file", ""))).name)
            if text is None:
                problems.append(error(file, where, f"expected a note file of this bundle, found {span.get('file')!r}"))
                continue
            start, end = span.get("start"), span.get("end")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
                problems.append(error(file, where, f"expected 0 <= start < end <= {len(text)}, found {start}..{end}"))
            elif "text" in span and text[start:end] != span["text"]:
                problems.append(error(file, where, f"expected the span to read {span['text']!r}, found {text[start:end]!r}"))
        for i, item in enumerate(evidence.get("labs", [])):
            key = item.get("itemid", item.get("item"))
            if key not in lab_items:
                problems.append(error(file, f"evidence.{disease}.labs[{i}]", f"expected a lab item present in labs.csv, found {key!r}"))
        for i, region in enumerate(evidence.get("image", [])):
            name = Path(str(region.get("file", ""))).name
            if name not in image_files:
                problems.append(error(file, f"evidence.{disease}.image[{i}]", f"expected an image of this bundle, found {region.get('file')!r}"))
            mask = region.get("mask")
            if mask and not (folder / mask).is_file():
                problems.append(error(file, f"evidence.{disease}.image[{i}].mask", f"expected an existing mask file, found {mask!r}"))
    if record.labels is not None and isinstance(truth.get("labels"), dict) and truth["labels"] != record.labels:
        problems.append(error(file, "labels", "expected the same labels as patient.json"))
    return problems
