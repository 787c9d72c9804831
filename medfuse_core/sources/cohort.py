"""A folder of bundles read as a cohort: every readable patient, and every folder that could not be used.

Why a separate step from `read_bundle`: one bundle must never cost the others. Each folder is read on
its own and anything it raises becomes a line in `unreadable` (the folder relative to the cohort, and
the reason in words: no server path, no traceback). Two bundles that give the same patient id are both
refused and listed: a worklist row must open one definite record, not whichever was read last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medfuse_core.problems import Problem, Severity
from medfuse_core.record import PatientRecord
from medfuse_core.sources.validate import BundleReport, duplicate_id_problems, find_bundle_folders, validate_bundle


@dataclass(frozen=True)
class Unreadable:
    """One folder left out of the cohort: where (relative to the cohort folder) and why."""

    folder: str
    reason: str


@dataclass
class CohortLoad:
    records: list[PatientRecord] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)


def describe_problem(problem: Problem, root: Path) -> str:
    """'file: field: message' with the file relative to `root` (the server's folders are not shown)."""
    file = str(problem.file)
    for prefix in (str(root), str(root.resolve())):
        if file.startswith(prefix):
            file = file[len(prefix):].lstrip("/\\") or "."
            break
    else:
        file = Path(file).name
    return ": ".join(part for part in (file, problem.field, problem.message) if part)


def _relative(folder: Path, root: Path) -> str:
    try:
        return folder.relative_to(root).as_posix() or "."
    except ValueError:
        return folder.name


def read_cohort(root: str | Path) -> CohortLoad:
    """Read every bundle folder under `root` (never raises; see the module docstring)."""
    root = Path(root)
    out = CohortLoad()
    try:
        folders = find_bundle_folders(root)
    except Exception as exc:  # an unlistable root: nothing to show, and the reason
        out.unreadable.append(Unreadable(".", f"the folder cannot be listed ({type(exc).__name__})"))
        return out
    read: list[tuple[BundleReport, PatientRecord | None]] = [validate_bundle(folder) for folder in folders]
    refused = {id(report): problem for report, problem in duplicate_id_problems([r for r, _ in read], root)}
    for report, record in read:
        if id(report) in refused:
            out.unreadable.append(Unreadable(_relative(report.folder, root), describe_problem(refused[id(report)], root)))
        elif record is None:
            errors = [p for p in report.problems if p.severity is Severity.ERROR] or report.problems
            reason = describe_problem(errors[0], root) if errors else "could not be read"
            out.unreadable.append(Unreadable(_relative(report.folder, root), reason))
        else:
            out.records.append(record)
    return out
