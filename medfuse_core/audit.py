"""The audit trail: an append-only JSON-lines log of who saw, exported or uploaded what, in a keyed chain.

Each line is one entry {seq, time, user, role, action, patient_id, detail, key_id, prev_hash, hash}. `hash`
is the HMAC-SHA256, under the key named by `key_id`, of the entry's canonical JSON without `hash` (so it
covers `prev_hash`), and `prev_hash` is the previous line's `hash` (64 zeros for the first).

Why keyed: with a plain SHA-256 chain anyone who can write the file can delete a line and recompute every
hash after it, or append a forged entry with a correct hash. The key lives outside the log (a key file,
mode 600, created at the first append; `$MEDFUSE_LENS_AUDIT_KEY`, default `<log>.key`), so a person who
can edit the log but not read the key cannot make a line that verifies. `rotate_key` adds a new key; the
rotation is itself an entry, signed with the old key and naming the new one, and every later entry must
use the new key (old keys stay in the key file, to verify the entries they signed).

Why an anchor: cutting lines off the end (or emptying the log) leaves a shorter chain that is intact. On
every append the entry count and the head hash are also written, with their own HMAC, to an anchor file
(`$MEDFUSE_LENS_AUDIT_ANCHOR`, default `<log>.anchor`) and, with MEDFUSE_LENS_AUDIT_SYSLOG=1, to syslog
(the journal), which the log's writer cannot take back. `verify` compares the log with the anchor.

What it cannot detect: anyone holding the key (it is readable by the server's account) can rewrite the
log, the anchor and the chain consistently; only a copy of the anchor kept elsewhere (syslog shipped to
another machine) catches that. Deleting log, key and anchor together leaves nothing to compare.

Appends hold an exclusive file lock (`filelock`) around read-last-line + write + anchor, so threads and
processes can log to one file without forking the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from medfuse_core import bounded_json

AUDIT_ENV = "MEDFUSE_LENS_AUDIT_LOG"
KEY_ENV = "MEDFUSE_LENS_AUDIT_KEY"
ANCHOR_ENV = "MEDFUSE_LENS_AUDIT_ANCHOR"
SYSLOG_ENV = "MEDFUSE_LENS_AUDIT_SYSLOG"
GENESIS = "0" * 64  # prev_hash of the first entry
FIELDS = ("seq", "time", "user", "role", "action", "patient_id", "detail", "key_id", "prev_hash", "hash")
LEGACY_FIELDS = tuple(f for f in FIELDS if f != "key_id")  # unkeyed SHA-256 lines written before the key
ROTATION = "key_rotated"
LOCK_TIMEOUT_S = 30.0
MAX_TEXT_CHARS = 256  # user, role, action, patient_id: longer values are cut (a 10 MB id must not hold the lock)
MAX_DETAIL_BYTES = 16 * 1024
MAX_LINE_BYTES = 64 * 1024


class AuditError(OSError):
    """The log cannot be appended to (unwritable, locked for too long, its last line is damaged, no key)."""


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found: `entries` intact lines read, and the first bad line (1-based) with why; or, with
    `bad_line` 0, a problem of the log as a whole (cut off, emptied, deleted, anchor missing)."""

    path: Path
    entries: int
    bad_line: int | None = None
    problem: str = ""
    legacy: int = 0  # unkeyed lines at the start (written before the keyed chain)

    @property
    def ok(self) -> bool:
        return self.bad_line is None

    def describe(self) -> str:
        if self.ok:
            note = f" ({self.legacy} older unkeyed entries at the start)" if self.legacy else ""
            return f"{self.path}: {self.entries} entries, chain intact{note}"
        if self.bad_line == 0:
            return f"{self.path}: {self.problem}"
        before = "1 entry" if self.entries == 1 else f"{self.entries} entries"
        return f"{self.path}: line {self.bad_line}: {self.problem} ({before} before it intact)"


def default_log_path() -> Path:
    """$MEDFUSE_LENS_AUDIT_LOG, else `audit.log` in the cache home ($MEDFUSE_LENS_HOME or ~/.cache/medfuse-lens)."""
    from medfuse_core.runtime.cache import cache_home

    env = os.environ.get(AUDIT_ENV, "").strip()
    return Path(env) if env else cache_home() / "audit.log"


def key_path_for(log: Path) -> Path:
    env = os.environ.get(KEY_ENV, "").strip()
    return Path(env) if env else log.with_name(log.name + ".key")


def anchor_path_for(log: Path) -> Path:
    env = os.environ.get(ANCHOR_ENV, "").strip()
    return Path(env) if env else log.with_name(log.name + ".anchor")


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8, with `hash` left out."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def entry_hash(entry: dict[str, Any], key: bytes | None = None) -> str:
    """HMAC-SHA256 of the entry under `key`; plain SHA-256 without one (legacy lines only)."""
    if key is None:
        return hashlib.sha256(canonical(entry)).hexdigest()
    return hmac.new(key, canonical(entry), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------------ keys


@dataclass(frozen=True)
class KeyRing:
    """Every key the log was signed with, by id, and the one new entries use."""

    current: str
    keys: dict[str, bytes]


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"medfuse-audit-key-id" + key).hexdigest()[:16]


def load_keys(path: Path) -> KeyRing | None:
    """The key file (None when there is none); AuditError when it is unusable or readable by others."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditError(f"audit key {path}: readable by other accounts (mode {stat.S_IMODE(info.st_mode):o}); "
                         "expected mode 600 (chmod 600 it, and rotate the key if others may have read it)")
    try:
        data = bounded_json.read(path, max_bytes=1024**2)
        keys = {str(k): bytes.fromhex(v) for k, v in data["keys"].items()}
        ring = KeyRing(str(data["current"]), keys)
    except (bounded_json.JsonLimitError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AuditError(f"audit key {path}: not a key file ({exc})") from None
    if ring.current not in ring.keys or any(_key_id(v) != k for k, v in keys.items()):
        raise AuditError(f"audit key {path}: damaged (a key does not match its id)")
    return ring


def _write_keys(path: Path, ring: KeyRing) -> None:
    body = json.dumps({"current": ring.current, "keys": {k: v.hex() for k, v in ring.keys.items()}}, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keys_or_new(path: Path) -> KeyRing:
    ring = load_keys(path)
    if ring is None:
        key = secrets.token_bytes(32)
        ring = KeyRing(_key_id(key), {_key_id(key): key})
        _write_keys(path, ring)
    return ring


# ---------------------------------------------------------------------------------------- append


def _cut(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + f"...(cut; {len(text):,} characters)"


def append(action: str, *, user: str, role: str | None, patient_id: str | None = None,
           detail: dict[str, Any] | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """Append one entry (chained to the current last line, signed with the current key), update the
    anchor, and return the entry. Raises AuditError when it cannot."""
    log = Path(path) if path is not None else default_log_path()
    if not action:
        raise ValueError("an audit entry needs an action")
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(log) + ".lock", timeout=LOCK_TIMEOUT_S):
            ring = _keys_or_new(key_path_for(log))
            return _append_locked(log, ring, ring.current, action, user, role, patient_id, detail)
    except Timeout as exc:
        raise AuditError(f"audit log {log}: another writer held the lock for over {LOCK_TIMEOUT_S:.0f} s") from exc
    except (TypeError, ValueError) as exc:  # a detail that is not JSON
        raise AuditError(f"audit log {log}: the entry cannot be written as JSON ({exc})") from exc
    except AuditError:
        raise
    except OSError as exc:
        raise AuditError(f"audit log {log}: {exc.strerror or exc}") from exc


def _append_locked(log: Path, ring: KeyRing, key_id: str, action: str, user: str, role: str | None,
                   patient_id: str | None, detail: dict[str, Any] | None) -> dict[str, Any]:
    last, needs_newline = _last_entry(log)
    detail = dict(detail or {})
    if len(json.dumps(detail, ensure_ascii=False, allow_nan=False)) > MAX_DETAIL_BYTES:
        detail = {"cut": f"detail over {MAX_DETAIL_BYTES:,} bytes left out"}
    entry: dict[str, Any] = {
        "seq": (last["seq"] + 1) if last else 1,
        "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "user": _cut(user),
        "role": None if role is None else _cut(role),
        "action": _cut(action),
        "patient_id": None if patient_id is None else _cut(patient_id),
        "detail": detail,
        "key_id": key_id,
        "prev_hash": last["hash"] if last else GENESIS,
    }
    entry["hash"] = entry_hash(entry, ring.keys[key_id])
    line = (b"\n" if needs_newline else b"") + _line(entry)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    _write_anchor(log, ring, entry)
    return entry


def rotate_key(path: str | Path | None = None, *, user: str = "admin") -> dict[str, Any]:
    """Make a new key the current one. The rotation is logged as an entry signed with the old key that
    names the new key's id, so the chain proves who may sign after it. Returns that entry."""
    log = Path(path) if path is not None else default_log_path()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(log) + ".lock", timeout=LOCK_TIMEOUT_S):
            ring = _keys_or_new(key_path_for(log))
            key = secrets.token_bytes(32)
            new_id = _key_id(key)
            # the new key is saved (not yet current) before the entry naming it, so it can never be lost
            _write_keys(key_path_for(log), KeyRing(ring.current, {**ring.keys, new_id: key}))
            ring = KeyRing(ring.current, {**ring.keys, new_id: key})
            entry = _append_locked(log, ring, ring.current, ROTATION, user, None, None,
                                   {"new_key_id": new_id, "old_key_id": ring.current})
            rotated = KeyRing(new_id, ring.keys)
            _write_keys(key_path_for(log), rotated)
            _write_anchor(log, rotated, entry)
            return entry
    except Timeout as exc:
        raise AuditError(f"audit log {log}: another writer held the lock for over {LOCK_TIMEOUT_S:.0f} s") from exc
    except AuditError:
        raise
    except OSError as exc:
        raise AuditError(f"audit log {log}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------------------------------- anchor


def _anchor_mac(key: bytes, entries: int, head: str) -> str:
    return hmac.new(key, f"medfuse-audit-anchor|{entries}|{head}".encode(), hashlib.sha256).hexdigest()


def _write_anchor(log: Path, ring: KeyRing, entry: dict[str, Any]) -> None:
    """The count and head hash after `entry`, signed, replacing the anchor file atomically; and to syslog."""
    anchor = anchor_path_for(log)
    body = {"entries": entry["seq"], "head": entry["hash"], "key_id": ring.current, "time": entry["time"],
            "mac": _anchor_mac(ring.keys[ring.current], entry["seq"], entry["hash"])}
    anchor.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{anchor.name}.", dir=anchor.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(body) + "\n")
        os.replace(tmp, anchor)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.environ.get(SYSLOG_ENV, "").strip() == "1":
        try:
            import syslog

            syslog.syslog(syslog.LOG_AUTH | syslog.LOG_INFO,
                          f"medfuse-lens audit {log.name}: entries={entry['seq']} head={entry['hash']}")
        except (ImportError, OSError):
            pass


def _read_anchor(log: Path, ring: KeyRing | None) -> tuple[dict[str, Any] | None, str]:
    """(anchor, '') or (None, why it is unusable; '' when there is none)."""
    anchor = anchor_path_for(log)
    if not anchor.exists():
        return None, ""
    try:
        body = bounded_json.read(anchor, max_bytes=4096)
        entries, head, key_id, mac = int(body["entries"]), str(body["head"]), str(body["key_id"]), str(body["mac"])
    except (bounded_json.JsonLimitError, OSError, KeyError, TypeError, ValueError) as exc:
        return None, f"the anchor file {anchor.name} is damaged ({exc})"
    if ring is None or key_id not in ring.keys:
        return None, f"the anchor file {anchor.name} names a key that is not in the key file"
    if not hmac.compare_digest(mac, _anchor_mac(ring.keys[key_id], entries, head)):
        return None, f"the anchor file {anchor.name} was changed (its signature does not match)"
    return {"entries": entries, "head": head}, ""


def _line(entry: dict[str, Any]) -> bytes:
    ordered = {k: entry[k] for k in FIELDS if k in entry}
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
    """('', entry) or (what is wrong, entry or None): the checks of one line's shape (not its hash)."""
    try:
        entry = bounded_json.loads(raw, max_bytes=MAX_LINE_BYTES, max_depth=16)
    except bounded_json.JsonLimitError:
        return "not a JSON object (damaged or cut off)", None
    if not isinstance(entry, dict):
        return "not a JSON object", None
    fields = FIELDS if "key_id" in entry else LEGACY_FIELDS
    missing = [k for k in fields if k not in entry]
    if missing:
        return f"missing field(s) {', '.join(missing)}", entry
    if not isinstance(entry["seq"], int) or isinstance(entry["seq"], bool):
        return "seq is not an integer", entry
    if not isinstance(entry["detail"], dict):
        return "detail is not an object", entry
    if not isinstance(entry["hash"], str):
        return "hash is not a string", entry
    return "", entry


def read_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, raw line without newline, whether it ended with a newline) for every line."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            yield number, raw.rstrip(b"\n"), raw.endswith(b"\n")


def verify(path: str | Path | None = None) -> VerifyResult:
    """Walk the chain from the first line, checking each line's HMAC with the key it names, then compare
    the end of the chain with the anchor. Stops at the first line that is damaged, forged or out of place.
    FileNotFoundError when there is neither a log nor an anchor (nothing was ever logged there)."""
    log = Path(path) if path is not None else default_log_path()
    try:
        ring = load_keys(key_path_for(log))
    except AuditError as exc:
        return VerifyResult(log, 0, 0, str(exc))
    anchor, anchor_problem = _read_anchor(log, ring)
    if not log.is_file():
        if anchor is not None or anchor_problem:
            recorded = f"the anchor records {anchor['entries']} entries" if anchor else anchor_problem
            return VerifyResult(log, 0, 0, f"the log is missing (deleted?); {recorded}")
        raise FileNotFoundError(2, "No such file", str(log))
    prev_hash, prev_seq, count, legacy = GENESIS, 0, 0, 0
    signer: str | None = None  # the key the next keyed entry must use (None: the first keyed entry decides)
    for number, raw, complete in read_lines(log):
        if not raw.strip():
            return VerifyResult(log, count, number, "empty line", legacy)
        problem, entry = _parse(raw)
        if problem or entry is None:
            if not complete:
                problem += "; the file ends without a newline (a write was cut off?)"
            return VerifyResult(log, count, number, problem, legacy)
        keyed = "key_id" in entry
        if not keyed:
            if signer is not None or legacy != count:
                return VerifyResult(log, count, number, "an unkeyed entry after keyed ones (forged: every entry "
                                                        "since the key was made must carry its HMAC)", legacy)
            if entry_hash(entry) != entry["hash"]:
                return VerifyResult(log, count, number, "hash does not match the entry (the line was changed)", legacy)
        else:
            key_id = entry["key_id"]
            if ring is None or key_id not in ring.keys:
                return VerifyResult(log, count, number, f"signed with key {str(key_id)[:16]!r}, which is not in the "
                                                        f"key file {key_path_for(log).name} (forged, or the key file "
                                                        "was replaced)", legacy)
            if signer is not None and key_id != signer:
                return VerifyResult(log, count, number, f"signed with key {key_id}, but the chain's key at this point "
                                                        f"is {signer} (a retired key was used)", legacy)
            if not hmac.compare_digest(entry_hash(entry, ring.keys[key_id]), entry["hash"]):
                return VerifyResult(log, count, number, "hash does not match the entry (HMAC with the audit key: the "
                                                        "line was changed, or written by someone without the key)",
                                    legacy)
            signer = key_id
            if entry["action"] == ROTATION:
                signer = str(entry["detail"].get("new_key_id", signer))
        if entry["prev_hash"] != prev_hash:
            where = "the start of the log" if prev_seq == 0 else f"entry seq {prev_seq} on line {number - 1}"
            return VerifyResult(log, count, number, f"prev_hash does not match {where} (a line was deleted, "
                                                    "inserted or moved here)", legacy)
        if entry["seq"] != prev_seq + 1:
            return VerifyResult(log, count, number, f"seq {entry['seq']} follows seq {prev_seq}", legacy)
        prev_hash, prev_seq, count = entry["hash"], entry["seq"], count + 1
        legacy += 0 if keyed else 1
    return _against_anchor(log, count, prev_hash, legacy, anchor, anchor_problem)


def _against_anchor(log: Path, count: int, head: str, legacy: int, anchor: dict[str, Any] | None,
                    anchor_problem: str) -> VerifyResult:
    """The intact chain of `count` entries ending in `head`, compared with the anchor."""
    if anchor_problem:
        return VerifyResult(log, count, 0, f"{count} entries, chain intact, but {anchor_problem}", legacy)
    if anchor is None:
        if count > legacy:  # keyed entries were written, and every keyed append writes the anchor
            return VerifyResult(log, count, 0, f"{count} entries, chain intact, but the anchor file "
                                               f"{anchor_path_for(log).name} is missing (deleted?): whether lines "
                                               "were cut off the end cannot be checked", legacy)
        return VerifyResult(log, count, legacy=legacy)
    if count == 0 and anchor["entries"] > 0:
        return VerifyResult(log, 0, 0, f"the log is empty, but the anchor records {anchor['entries']} entries "
                                       "(the log was emptied)", legacy)
    if anchor["entries"] > count:
        return VerifyResult(log, count, 0, f"{count} entries, chain intact, but the anchor records "
                                           f"{anchor['entries']}: the last {anchor['entries'] - count} entries "
                                           "were cut off the end", legacy)
    if anchor["entries"] < count:
        return VerifyResult(log, count, 0, f"{count} entries, but the anchor records {anchor['entries']}: "
                                           f"{count - anchor['entries']} entries after it were not anchored "
                                           "(appended by someone holding the key, or a crash between the two "
                                           "writes)", legacy)
    if not hmac.compare_digest(anchor["head"], head):
        return VerifyResult(log, count, 0, f"{count} entries, but the last entry is not the one the anchor "
                                           "records (the end of the log was replaced)", legacy)
    return VerifyResult(log, count, legacy=legacy)


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
