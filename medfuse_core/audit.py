"""The audit trail: an append-only JSON-lines log of who saw, exported or uploaded what, hash-chained.

Each line is one entry {seq, time, user, role, action, patient_id, detail, prev_hash, hash}. `hash` is the
SHA-256 of the entry's canonical JSON without `hash` (so it covers `prev_hash`), and `prev_hash` is the
previous line's `hash` (64 zeros for the first). Editing, deleting, inserting or reordering a line therefore
breaks the chain at that line, which `verify` names. Cutting lines off the *end* leaves a shorter chain
that is still intact: keep a copy of the last hash elsewhere (or ship the log) if that matters.

Appends hold an exclusive file lock (`filelock`) around read-last-line + write, so threads and processes
can log to one file without forking the chain.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

AUDIT_ENV = "MEDFUSE_LENS_AUDIT_LOG"
GENESIS = "0" * 64  # prev_hash of the first entry
FIELDS = ("seq", "time", "user", "role", "action", "patient_id", "detail", "prev_hash", "hash")
LOCK_TIMEOUT_S = 30.0


class AuditError(OSError):
    """The log cannot be appended to (unwritable, locked for too long, or its last line is damaged)."""


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found: `entries` intact lines read, and the first bad line (1-based) with why."""

    path: Path
    entries: int
    bad_line: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.bad_line is None

    def describe(self) -> str:
        if self.ok:
            return f"{self.path}: {self.entries} entries, chain intact"
        before = "1 entry" if self.entries == 1 else f"{self.entries} entries"
        return f"{self.path}: line {self.bad_line}: {self.problem} ({before} before it intact)"


def default_log_path() -> Path:
    """$MEDFUSE_LENS_AUDIT_LOG, else `audit.log` in the cache home ($MEDFUSE_LENS_HOME or ~/.cache/medfuse-lens)."""
    from medfuse_core.runtime.cache import cache_home

    env = os.environ.get(AUDIT_ENV, "").strip()
    return Path(env) if env else cache_home() / "audit.log"


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8, with `hash` left out."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def append(action: str, *, user: str, role: str | None, patient_id: str | None = None,
           detail: dict[str, Any] | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """Append one entry (chained to the current last line) and return it. Raises AuditError when it cannot."""
    log = Path(path) if path is not None else default_log_path()
    if not action:
        raise ValueError("an audit entry needs an action")
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(log) + ".lock", timeout=LOCK_TIMEOUT_S):
            last, needs_newline = _last_entry(log)
            entry: dict[str, Any] = {
                "seq": (last["seq"] + 1) if last else 1,
                "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "user": str(user),
                "role": None if role is None else str(role),
                "action": str(action),
                "patient_id": None if patient_id is None else str(patient_id),
                "detail": dict(detail or {}),
                "prev_hash": last["hash"] if last else GENESIS,
            }
            entry["hash"] = entry_hash(entry)
            line = (b"\n" if needs_newline else b"") + _line(entry)
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
    except Timeout as exc:
        raise AuditError(f"audit log {log}: another writer held the lock for over {LOCK_TIMEOUT_S:.0f} s") from exc
    except (TypeError, ValueError) as exc:  # a detail that is not JSON
        raise AuditError(f"audit log {log}: the entry cannot be written as JSON ({exc})") from exc
    except AuditError:
        raise
    except OSError as exc:
        raise AuditError(f"audit log {log}: {exc.strerror or exc}") from exc
    return entry


def _line(entry: dict[str, Any]) -> bytes:
    ordered = {k: entry[k] for k in FIELDS}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def _last_entry(log: Path) -> tuple[dict[str, Any] | None, bool]:
    """(the last line's entry or None for an empty/missing log, whether the file lacks its final newline)."""
    try:
        size = log.stat().st_size
    except FileNotFoundError:
        return None, False
    if size == 0:
        return None, False
    with open(log, "rb") as fh:
        block, chunk = b"", 4096
        pos = size
        while pos > 0:  # read backwards until the start of the last non-empty line is in `block`
            step = min(chunk, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step) + block
            if block.rstrip(b"\n").count(b"\n") >= 1:
                break
    needs_newline = not block.endswith(b"\n")
    tail = block.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    problem, entry = _parse(tail)
    if entry is None or problem:
        raise AuditError(f"audit log {log}: the last line is damaged ({problem}); nothing more is appended until it "
                         "is repaired (see `python -m medfuse_core audit verify`)")
    return entry, needs_newline


def _parse(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """('', entry) or (what is wrong, entry or None): the checks one line passes on its own."""
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "not a JSON object (damaged or cut off)", None
    if not isinstance(entry, dict):
        return "not a JSON object", None
    missing = [k for k in FIELDS if k not in entry]
    if missing:
        return f"missing field(s) {', '.join(missing)}", entry
    if not isinstance(entry["seq"], int) or isinstance(entry["seq"], bool):
        return "seq is not an integer", entry
    if not isinstance(entry["detail"], dict):
        return "detail is not an object", entry
    if entry_hash(entry) != entry["hash"]:
        return "hash does not match the entry (the line was changed)", entry
    return "", entry


def read_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, raw line without newline, whether it ended with a newline) for every line."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            yield number, raw.rstrip(b"\n"), raw.endswith(b"\n")


def verify(path: str | Path | None = None) -> VerifyResult:
    """Walk the chain from the first line; stop at the first line that is damaged or out of place."""
    log = Path(path) if path is not None else default_log_path()
    if not log.is_file():
        raise FileNotFoundError(2, "No such file", str(log))
    prev_hash, prev_seq, count = GENESIS, 0, 0
    for number, raw, complete in read_lines(log):
        if not raw.strip():
            return VerifyResult(log, count, number, "empty line")
        problem, entry = _parse(raw)
        if problem or entry is None:
            if not complete:
                problem += "; the file ends without a newline (a write was cut off?)"
            return VerifyResult(log, count, number, problem)
        if entry["prev_hash"] != prev_hash:
            where = "the start of the log" if prev_seq == 0 else f"entry seq {prev_seq} on line {number - 1}"
            return VerifyResult(log, count, number, f"prev_hash does not match {where} (a line was deleted, "
                                                    "inserted or moved here)")
        if entry["seq"] != prev_seq + 1:
            return VerifyResult(log, count, number, f"seq {entry['seq']} follows seq {prev_seq}")
        prev_hash, prev_seq, count = entry["hash"], entry["seq"], count + 1
    return VerifyResult(log, count)


def tail(path: str | Path | None = None, n: int = 10) -> list[dict[str, Any]]:
    """The last `n` readable entries (damaged lines are skipped here; `verify` reports them)."""
    log = Path(path) if path is not None else default_log_path()
    if not log.is_file():
        raise FileNotFoundError(2, "No such file", str(log))
    if n <= 0:
        return []
    out: deque[dict[str, Any]] = deque(maxlen=n)
    for _, raw, _ in read_lines(log):
        _, entry = _parse(raw)
        if entry is not None:
            out.append(entry)
    return list(out)


def format_entry(entry: dict[str, Any]) -> str:
    """One line for people: seq, time, user (role), action, patient, detail."""
    detail = json.dumps(entry.get("detail") or {}, ensure_ascii=False, sort_keys=True)
    return (f"{entry.get('seq')}\t{entry.get('time')}\t{entry.get('user')} ({entry.get('role') or '-'})\t"
            f"{entry.get('action')}\t{entry.get('patient_id') or '-'}\t{detail}")
