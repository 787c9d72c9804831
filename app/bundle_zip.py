"""Uploaded patient bundles: a zip unpacked safely into a folder the caller owns (a temporary one).

No Streamlit here. The zip comes from a browser, so it is treated as hostile: member names that would
land outside the target (absolute paths, drive letters, `..`), links and special files are refused;
the number of members and the uncompressed size are capped, and sizes are counted while writing,
so a zip bomb that lies about its sizes stops at the cap. Every refusal is a `Problem` a person can
act on, never a traceback.
"""

from __future__ import annotations

import io
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from app.scoring import PatientScores, score_records
from medfuse_core.problems import Problem, error
from medfuse_core.record import PatientRecord
from medfuse_core.sources.bundle import find_bundles
from medfuse_core.sources.validate import validate_bundle

MAX_MEMBERS = 5000
MAX_TOTAL_BYTES = 512 * 1024**2  # uncompressed, all members together
MAX_MEMBER_BYTES = 256 * 1024**2
CHUNK = 1024**2


@dataclass
class Unpacked:
    """What came out of the zip: the files written, and why anything was refused."""

    root: Path
    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

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
        return out
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            out.problems.append(error(label, "", f"expected at most {max_members} files; the zip has {len(infos)}"))
            return out
        declared = sum(i.file_size for i in infos)
        if declared > max_total:
            out.problems.append(error(label, "", f"expected at most {max_total // 1024**2} MB unpacked; the zip "
                                                 f"declares {declared / 1024**2:.0f} MB"))
            return out
        written = 0
        for info in infos:
            rel = _safe_name(info.filename)
            if rel is None:
                out.problems.append(error(label, info.filename, "refused: the path would leave the upload folder"))
                continue
            if _is_link_or_special(info):
                out.problems.append(error(label, info.filename, "refused: links and special files are not allowed"))
                continue
            if rel.parts and rel.parts[0] == "__MACOSX":
                continue  # macOS resource forks: not part of the bundle
            dest = (root / Path(*rel.parts)).resolve()
            if dest != root and root not in dest.parents:
                out.problems.append(error(label, info.filename, "refused: the path would leave the upload folder"))
                continue
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            try:
                with archive.open(info) as src, open(dest, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        if size > max_member or written > max_total:
                            raise _TooBig(size > max_member)
                        dst.write(chunk)
            except _TooBig as big:
                limit = f"{max_member // 1024**2} MB per file" if big.member else f"{max_total // 1024**2} MB in all"
                out.problems.append(error(label, info.filename, f"refused: more than {limit} unpacked"))
                return out
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
                out.problems.append(error(label, info.filename, f"could not be unpacked ({exc})"))
                continue
            out.files.append(dest)
    if not out.files and not out.problems:
        out.problems.append(error(label, "", "expected the files of a patient bundle; the zip is empty"))
    return out


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


def _problem_rows(problems: list[Problem], root: Path, bundle: str = "") -> list[dict[str, str]]:
    return [{"bundle": bundle, "severity": p.severity.value, "file": relative_problem_file(p.file, root),
             "field": p.field, "message": p.message} for p in problems]


def read_upload(data: bytes, name: str, predictor: Any | None, no_model_reason: str = "") -> UploadResult:
    """Unpack `data` into a temporary folder (deleted on return), validate every bundle in it, and
    score the readable ones with `predictor` (None: validation only, `no_model_reason` says why)."""
    rows: list[dict[str, str]] = []
    records: list[PatientRecord] = []
    with tempfile.TemporaryDirectory(prefix="medfuse-upload-") as tmp:
        root = Path(tmp)
        unpacked = unpack_zip(data, root, name)
        rows += _problem_rows(unpacked.problems, root)
        if not unpacked.ok:
            return UploadResult(pd.DataFrame(rows, columns=PROBLEM_COLUMNS),
                                fatal="The zip was refused; nothing from it was used.")
        folders = find_bundles(root)
        if not folders:
            return UploadResult(pd.DataFrame(rows, columns=PROBLEM_COLUMNS),
                                fatal="No patient bundle in the zip: expected a folder (or the zip's top level) "
                                      "with patient.json.")
        for folder in folders:
            report, record = validate_bundle(folder)
            rows += _problem_rows(report.problems, root, relative_problem_file(str(folder), root))
            if record is not None:
                record.source = ""  # the folder is deleted on return; nothing may read it later
                records.append(record)
        result = UploadResult(pd.DataFrame(rows, columns=PROBLEM_COLUMNS), records)
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
