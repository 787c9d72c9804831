"""Uploaded patient bundles: a zip unpacked safely into a folder the caller owns (a temporary one).

No Streamlit here. The zip comes from a browser, so it is treated as hostile: member names that would
land outside the target (absolute paths, drive letters, `..`), links and special files are refused
(that member only: it is never written, an error row names it, and the rest of the bundle is used);
the number of members and the uncompressed size are capped, and sizes are counted while writing,
so a zip bomb that lies about its sizes stops at the cap (then nothing from the zip is used). Every
refusal is a `Problem` a person can act on, never a traceback.

Where files go: each browser session owns one temporary folder (`new_session_dir`, a
`tempfile.TemporaryDirectory` named medfuse-session-*, kept in the session's state). A bundle is
unpacked into a folder inside it that is deleted as soon as the bundle is read; an uploaded checkpoint
stays in it while the session uses it and is deleted when another replaces it. Streamlit has no
session-end hook: the folder is deleted when the session's state is garbage-collected (the
TemporaryDirectory's finalizer), and `remove_stale_session_dirs` removes any left behind by a crash
(untouched for STALE_HOURS) when a new session starts.
"""

from __future__ import annotations

import io
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from medfuse_core.explain.scores import PatientScores, score_records
from medfuse_core.problems import Problem, error
from medfuse_core.record import PatientRecord
from medfuse_core.sources.validate import duplicate_id_problems, find_bundle_folders, validate_bundle

MAX_MEMBERS = 5000
MAX_TOTAL_BYTES = 512 * 1024**2  # uncompressed, all members together
MAX_MEMBER_BYTES = 256 * 1024**2
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX on Linux, macOS and Windows)
MAX_PATH_BYTES = 1024
CHUNK = 1024**2


@dataclass
class Unpacked:
    """What came out of the zip: the files written, and why anything was refused."""

    root: Path
    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    fatal: bool = False  # a limit was hit or the zip is unreadable: nothing from it may be used

    @property
    def ok(self) -> bool:
        return not self.problems


def _safe_name(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it could escape the target folder."""
    name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if not name or name.startswith("/") or (len(path.parts) > 0 and ":" in path.parts[0]):
        return None
    if any(part == ".." for part in path.parts):
        return None
    return path


def _name_problem(rel: PurePosixPath) -> str:
    """Why this path cannot be written on this machine ('' when it can)."""
    for part in rel.parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            return (f"refused: a file or folder name is {len(part.encode('utf-8', 'surrogateescape')):,} bytes long; "
                    f"expected at most {MAX_NAME_BYTES}")
    if len(str(rel).encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        return f"refused: the path is longer than {MAX_PATH_BYTES:,} bytes"
    return ""


def _layout_conflicts(infos: list[zipfile.ZipInfo]) -> tuple[list[str], set[str]]:
    """(paths given by two or more members, file members whose path is also a folder in the zip).
    Both make the result depend on the order of writing, so they are refused, never resolved in silence."""
    seen: dict[str, int] = {}
    folders: set[str] = set()
    for info in infos:
        rel = _safe_name(info.filename)
        if rel is None or not rel.parts:
            continue
        key = rel.as_posix()
        seen[key] = seen.get(key, 0) + 1
        folders.update(p.as_posix() for p in rel.parents if p.parts)
        if info.is_dir():
            folders.add(key)
    duplicates = sorted(k for k, n in seen.items() if n > 1)
    files_as_folders = {i.filename for i in infos if not i.is_dir() and (rel := _safe_name(i.filename)) is not None
                        and rel.parts and rel.as_posix() in folders}
    return duplicates, files_as_folders


def _remove_quietly(path: Path) -> None:
    """Remove a half-written file; never raises (the path may be a folder, or gone)."""
    try:
        if path.is_file() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def _is_link_or_special(info: zipfile.ZipInfo) -> bool:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip tool recorded no file type
    return kind not in (0, stat.S_IFREG, stat.S_IFDIR)


def unpack_zip(data: bytes, target: str | Path, label: str = "upload.zip", *, max_members: int = MAX_MEMBERS,
               max_total: int = MAX_TOTAL_BYTES, max_member: int = MAX_MEMBER_BYTES) -> Unpacked:
    """Unpack `data` (a zip archive) under `target`; refused members and limits become problems.

    On a limit being hit the unpacking stops and the result is not ok (nothing half-trusted is used).
    """
    root = Path(target).resolve()
    out = Unpacked(root)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        out.problems.append(error(label, "", f"expected a zip archive of a patient bundle; could not open it ({exc})"))
        out.fatal = True
        return out
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            out.problems.append(error(label, "", f"expected at most {max_members} files; the zip has {len(infos)}"))
            out.fatal = True
            return out
        declared = sum(i.file_size for i in infos)
        if declared > max_total:
            out.problems.append(error(label, "", f"expected at most {max_total // 1024**2} MB unpacked; the zip "
                                                 f"declares {declared / 1024**2:.0f} MB"))
            out.fatal = True
            return out
        duplicates, files_as_folders = _layout_conflicts(infos)
        if duplicates:
            shown = ", ".join(repr(d[:80]) for d in duplicates[:5]) + (", ..." if len(duplicates) > 5 else "")
            out.problems.append(error(label, "", f"refused: {len(duplicates)} path(s) appear more than once in the zip "
                                                 f"({shown}); which copy is meant cannot be told"))
            out.fatal = True
            return out
        written = 0
        for info in infos:
            rel = _safe_name(info.filename)
            if rel is None:
                out.problems.append(error(label, info.filename, "refused: the path would leave the upload folder"))
                continue
            why = _name_problem(rel)
            if why:
                out.problems.append(error(label, _short(info.filename), why))
                continue
            if info.filename in files_as_folders:
                out.problems.append(error(label, info.filename, "refused: a file with the same path as a folder in the "
                                                                "zip (a file and a folder cannot share a name)"))
                continue
            if _is_link_or_special(info):
                out.problems.append(error(label, info.filename, "refused: links and special files are not allowed"))
                continue
            if rel.parts and rel.parts[0] == "__MACOSX":
                continue  # macOS resource forks: not part of the bundle
            try:
                dest = (root / Path(*rel.parts)).resolve()
            except (OSError, RuntimeError, ValueError) as exc:
                out.problems.append(error(label, _short(info.filename), f"could not be unpacked ({_reason(exc)}); left out"))
                continue
            if dest != root and root not in dest.parents:
                out.problems.append(error(label, info.filename, "refused: the path would leave the upload folder"))
                continue
            size = 0
            try:
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(dest, "xb") as dst:
                    while chunk := src.read(CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        if size > max_member or written > max_total:
                            raise _TooBig(size > max_member)
                        dst.write(chunk)
            except _TooBig as big:
                _remove_quietly(dest)
                limit = f"{max_member // 1024**2} MB per file" if big.member else f"{max_total // 1024**2} MB in all"
                out.problems.append(error(label, info.filename, f"refused: more than {limit} unpacked"))
                out.fatal = True
                return out
            except FileExistsError:  # written already (as a file or folder) by an earlier member: never overwritten
                out.problems.append(error(label, info.filename, "refused: another member already wrote this path"))
                continue
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, zlib.error) as exc:
                _remove_quietly(dest)  # a half-written file must not be read as part of the bundle
                out.problems.append(error(label, _short(info.filename), f"could not be unpacked ({_reason(exc)}); left out"))
                continue
            out.files.append(dest)
    if not out.files and not out.problems:
        out.problems.append(error(label, "", "expected the files of a patient bundle; the zip is empty"))
        out.fatal = True
    return out


def _short(name: str, limit: int = 120) -> str:
    return name if len(name) <= limit else name[:limit] + "..."


def _reason(exc: BaseException) -> str:
    """An OSError's words without the temporary path it names (which means nothing to the user)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__ if not str(exc) else str(exc)[:200]


class _TooBig(Exception):
    def __init__(self, member: bool):
        super().__init__()
        self.member = member


def relative_problem_file(problem_file: str, root: Path) -> str:
    """A problem's file path shown relative to the upload folder (temporary paths mean nothing to a user)."""
    text = str(problem_file)
    for prefix in (str(root), str(root.resolve())):
        if text.startswith(prefix):
            return text[len(prefix):].lstrip("/\\") or "."
    return text


# ------------------------------------------------------------------------------- upload -> scores

PROBLEM_COLUMNS = ["bundle", "severity", "file", "field", "message"]


@dataclass
class UploadResult:
    """What one uploaded zip gave: problems (rows for the table), readable records, their scores."""

    problems: pd.DataFrame
    records: list[PatientRecord] = field(default_factory=list)
    scores: dict[str, PatientScores] = field(default_factory=dict)
    fatal: str = ""  # why nothing could be used, when that is the case
    score_error: str = ""  # why there are no scores (no model, or scoring failed)
    duplicates: int = 0  # bundles left out because another bundle in the zip has the same patient id


def _problem_rows(problems: list[Problem], root: Path, bundle: str = "") -> list[dict[str, str]]:
    return [{"bundle": bundle, "severity": p.severity.value, "file": relative_problem_file(p.file, root),
             "field": p.field, "message": p.message} for p in problems]


def read_upload(data: bytes, name: str, predictor: Any | None, no_model_reason: str = "",
                workdir: str | Path | None = None) -> UploadResult:
    """Unpack `data` into a temporary folder inside `workdir` (the session's folder; None: the system's
    temporary folder), deleted on return; validate every bundle in it, and score the readable ones with
    `predictor` (None: validation only, `no_model_reason` says why)."""
    rows: list[dict[str, str]] = []
    records: list[PatientRecord] = []
    with tempfile.TemporaryDirectory(prefix="medfuse-upload-", dir=workdir) as tmp:
        root = Path(tmp)
        unpacked = unpack_zip(data, root, name)
        rows += _problem_rows(unpacked.problems, root)
        if unpacked.fatal:
            return UploadResult(pd.DataFrame(rows, columns=PROBLEM_COLUMNS),
                                fatal="The zip was refused; nothing from it was used.")
        folders = find_bundle_folders(root)
        if not folders:
            return UploadResult(pd.DataFrame(rows, columns=PROBLEM_COLUMNS),
                                fatal="No patient bundle in the zip: expected a folder (or the zip's top level) "
                                      "with patient.json.")
        validated = [validate_bundle(folder) for folder in folders]
        refused = {id(report): problem for report, problem in duplicate_id_problems([r for r, _ in validated], root)}
        for report, record in validated:
            folder = report.folder
            problems = report.problems + ([refused[id(report)]] if id(report) in refused else [])
            rows += _problem_rows(problems, root, relative_problem_file(str(folder), root))
            if record is not None and id(report) not in refused:  # two bundles, one id: neither is shown
                record.source = ""  # the folder is deleted on return; nothing may read it later
                records.append(record)
        result = UploadResult(pd.DataFrame(rows, columns=PROBLEM_COLUMNS), records)
        if refused:
            result.duplicates = len(refused)
        if not records:
            result.fatal = "No bundle in the zip could be read; see the problems below."
            return result
        if predictor is None:
            result.score_error = no_model_reason or "No model is loaded: validation only."
            return result
        try:
            result.scores = score_records(predictor, records)
        except Exception as exc:  # a record the featurizer cannot handle must not take the page down
            result.score_error = f"Scoring failed: {type(exc).__name__}: {exc}"
    return result


# ------------------------------------------------------------------------------ session folders

SESSION_PREFIX = "medfuse-session-"
STALE_HOURS = 12.0


def new_session_dir(base: str | Path | None = None) -> tempfile.TemporaryDirectory:
    """A session's own temporary folder (deleted by `.cleanup()` or when the object is garbage-collected);
    stale folders of sessions that ended without cleaning up are removed first."""
    remove_stale_session_dirs(base)
    return tempfile.TemporaryDirectory(prefix=SESSION_PREFIX, dir=base)


def touch(folder: str | Path) -> None:
    """Mark a session folder as in use (its mtime is what `remove_stale_session_dirs` reads)."""
    try:
        Path(folder).touch()
    except OSError:
        pass


def remove_stale_session_dirs(base: str | Path | None = None, max_age_hours: float = STALE_HOURS,
                              now: float | None = None) -> list[Path]:
    """Delete medfuse-session-* folders in `base` (default: the system's temporary folder) untouched for
    `max_age_hours`; returns those removed. Only real folders with the prefix are considered (no links)."""
    base = Path(base or tempfile.gettempdir())
    cutoff = (time.time() if now is None else now) - max_age_hours * 3600
    removed = []
    try:
        candidates = list(base.glob(SESSION_PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
