"""The audit log: a hash chain that names the first edited, deleted, inserted, moved or cut-off line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from medfuse_core import audit
from medfuse_core.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def _write(log: Path, n: int = 5) -> list[dict]:
    return [audit.append("view_patient", user=f"user{i}", role="clinician", patient_id=f"P{i:05d}",
                         detail={"i": i}, path=log) for i in range(1, n + 1)]


def _lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines(keepends=True)


def _rewrite(log: Path, lines: list[str]) -> None:
    log.write_text("".join(lines), encoding="utf-8")


def _verify_after(tmp_path: Path, edit) -> audit.VerifyResult:
    """Write 5 entries, let `edit` change the list of lines in place, write them back, verify."""
    log = tmp_path / "audit.log"
    _write(log)
    lines = _lines(log)
    edit(lines)
    _rewrite(log, lines)
    return audit.verify(log)


def test_intact_chain_verifies(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    entries = _write(log)
    result = audit.verify(log)
    assert result.ok and result.entries == 5 and result.bad_line is None
    assert result.describe().endswith("5 entries, chain intact")
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == audit.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:]))
    first = json.loads(_lines(log)[0])
    assert set(first) == set(audit.FIELDS)
    assert first["time"].endswith("+00:00") and first["patient_id"] == "P00001" and first["detail"] == {"i": 1}
    ring = audit.load_keys(audit.key_path_for(log))
    assert first["key_id"] == ring.current
    assert first["hash"] == audit.entry_hash(first, ring.keys[ring.current])  # HMAC-SHA256 under the key
    assert first["hash"] != audit.entry_hash(first)  # not the unkeyed SHA-256 anyone could recompute


def test_changed_line_is_named(tmp_path: Path) -> None:
    def edit(lines: list[str]) -> None:
        lines[2] = lines[2].replace('"user3"', '"mallory"')

    result = _verify_after(tmp_path, edit)
    assert (result.ok, result.bad_line, result.entries) == (False, 3, 2)
    assert "hash does not match" in result.problem


def test_changed_line_with_recomputed_hash_is_named(tmp_path: Path) -> None:
    """Without the key a recomputed hash is just SHA-256, which the keyed chain refuses at that very line."""
    log = tmp_path / "audit.log"
    _write(log)
    lines = _lines(log)
    forged = json.loads(lines[2])
    forged["patient_id"] = "P99999"
    forged["hash"] = audit.entry_hash(forged)
    lines[2] = json.dumps(forged) + "\n"
    _rewrite(log, lines)
    result = audit.verify(log)
    assert result.bad_line == 3 and "HMAC with the audit key" in result.problem


def test_deleted_line_is_named(tmp_path: Path) -> None:
    result = _verify_after(tmp_path, lambda lines: lines.pop(2))
    assert result.bad_line == 3 and "prev_hash" in result.problem and result.entries == 2


def test_deleted_first_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    _rewrite(log, _lines(log)[1:])
    result = audit.verify(log)
    assert result.bad_line == 1 and "start of the log" in result.problem


def test_reordered_pair_is_named(tmp_path: Path) -> None:
    def edit(lines: list[str]) -> None:
        lines[1], lines[2] = lines[2], lines[1]

    result = _verify_after(tmp_path, edit)
    assert result.bad_line == 2 and "prev_hash" in result.problem


def test_inserted_copy_is_named(tmp_path: Path) -> None:
    assert _verify_after(tmp_path, lambda lines: lines.insert(2, lines[1])).bad_line == 3


def test_truncated_last_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    data = log.read_bytes()
    log.write_bytes(data[:-40])  # a write cut off in the middle of line 5
    result = audit.verify(log)
    assert (result.bad_line, result.entries) == (5, 4)
    assert "not a JSON object" in result.problem and "without a newline" in result.problem
    with pytest.raises(audit.AuditError, match="last line is damaged"):
        audit.append("login", user="x", role="clinician", path=log)  # nothing is chained onto a damaged line


def test_blank_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 3)
    lines = _lines(log)
    lines.insert(1, "\n")
    _rewrite(log, lines)
    result = audit.verify(log)
    assert result.bad_line == 2 and result.problem == "empty line"


def test_append_after_a_lost_final_newline_keeps_the_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 3)
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    entry = audit.append("login", user="x", role="researcher", path=log)
    assert entry["seq"] == 4
    result = audit.verify(log)
    assert result.ok and result.entries == 4


def test_empty_log_verifies_and_missing_log_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.log").write_text("")
    assert audit.verify(tmp_path / "empty.log").entries == 0
    with pytest.raises(FileNotFoundError):
        audit.verify(tmp_path / "missing.log")


def test_detail_that_is_not_json_is_refused_without_writing(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with pytest.raises(audit.AuditError, match="JSON"):
        audit.append("export_report", user="u", role="clinician", detail={"x": object()}, path=log)
    assert not log.exists() or log.read_bytes() == b""


def test_default_location(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDFUSE_LENS_AUDIT_LOG", str(tmp_path / "here.log"))
    assert audit.default_log_path() == tmp_path / "here.log"
    monkeypatch.delenv("MEDFUSE_LENS_AUDIT_LOG")
    monkeypatch.setenv("MEDFUSE_LENS_HOME", str(tmp_path / "home"))
    assert audit.default_log_path() == tmp_path / "home" / "audit.log"


def test_concurrent_threads_keep_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(20):
                audit.append("view_patient", user=f"t{t}", role="clinician", detail={"t": t, "i": i}, path=log)
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    result = audit.verify(log)
    assert result.ok and result.entries == 120, result.describe()
    seen = {(e["detail"]["t"], e["detail"]["i"]) for e in map(json.loads, _lines(log))}
    assert seen == {(t, i) for t in range(6) for i in range(20)}


_WRITER = """
import sys
from medfuse_core.audit import append
for i in range(int(sys.argv[2])):
    append("upload_bundle", user=sys.argv[3], role="researcher", detail={"i": i}, path=sys.argv[1])
"""


def test_concurrent_processes_keep_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(log), "40", name], cwd=REPO_ROOT)
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    result = audit.verify(log)
    assert result.ok and result.entries == 80, result.describe()
    users = [json.loads(line)["user"] for line in _lines(log)]
    assert users.count("a") == 40 and users.count("b") == 40


def test_tail_returns_the_last_entries(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    assert [e["seq"] for e in audit.tail(log, 2)] == [4, 5]
    assert audit.tail(log, 0) == []


# ---------------------------------------------------------------------------------------- CLI


def test_cli_verify_exit_codes(tmp_path: Path, capsys) -> None:
    log = tmp_path / "audit.log"
    _write(log, 3)
    assert main(["audit", "verify", "--log", str(log)]) == 0
    assert "3 entries, chain intact" in capsys.readouterr().out

    lines = _lines(log)
    lines[1] = lines[1].replace('"clinician"', '"researcher"')
    _rewrite(log, lines)
    assert main(["audit", "verify", "--log", str(log)]) == 1
    err = capsys.readouterr().err
    assert "line 2:" in err and "hash does not match" in err

    assert main(["audit", "verify", "--log", str(tmp_path / "nope.log")]) == 2
    assert "nope.log" in capsys.readouterr().err


def test_cli_uses_the_environment_and_tails(tmp_path: Path, capsys, monkeypatch) -> None:
    log = tmp_path / "env.log"
    monkeypatch.setenv("MEDFUSE_LENS_AUDIT_LOG", str(log))
    _write(log, 4)
    assert main(["audit", "verify"]) == 0
    assert "4 entries" in capsys.readouterr().out
    assert main(["audit", "tail", "-n", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("3\t") and "user4 (clinician)" in out[1] and "P00004" in out[1]


def test_cli_as_a_process(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 2)
    ok = subprocess.run([sys.executable, "-m", "medfuse_core", "audit", "verify", "--log", str(log)],
                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert ok.returncode == 0 and "2 entries, chain intact" in ok.stdout
    log.write_bytes(log.read_bytes()[:-10])
    bad = subprocess.run([sys.executable, "-m", "medfuse_core", "audit", "verify", "--log", str(log)],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert bad.returncode == 1 and "line 2:" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------- keyed chain, anchor, rotation


def _recompute_unkeyed(lines: list[str]) -> list[str]:
    """What an attacker without the key can do after deleting a line: renumber and rechain with SHA-256."""
    out, prev = [], audit.GENESIS
    for seq, line in enumerate(lines, start=1):
        entry = json.loads(line)
        entry["seq"], entry["prev_hash"] = seq, prev
        entry["hash"] = prev = audit.entry_hash(entry)
        out.append(json.dumps(entry) + "\n")
    return out


def test_truncation_is_reported_from_the_anchor(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    _rewrite(log, _lines(log)[:3])
    result = audit.verify(log)
    assert not result.ok and result.bad_line == 0 and result.entries == 3
    assert result.describe() == (f"{log}: 3 entries, chain intact, but the anchor records 5: the last 2 entries "
                                 "were cut off the end")


def test_emptied_log_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    log.write_text("")
    result = audit.verify(log)
    assert not result.ok and result.problem == "the log is empty, but the anchor records 5 entries (the log was emptied)"


def test_deleted_log_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    log.unlink()
    result = audit.verify(log)
    assert not result.ok and result.problem == "the log is missing (deleted?); the anchor records 5 entries"


def test_deleted_entry_with_recomputed_chain_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    lines = _lines(log)
    del lines[2]
    _rewrite(log, _recompute_unkeyed(lines))
    result = audit.verify(log)
    assert not result.ok and result.bad_line == 1
    assert "HMAC with the audit key" in result.problem


def test_forged_appended_entry_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    entries = _write(log, 3)
    forged = {**entries[-1], "seq": 4, "user": "mallory", "action": "view_patient", "prev_hash": entries[-1]["hash"]}
    forged["hash"] = audit.entry_hash(forged)  # a correct SHA-256, the best one can do without the key
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(forged) + "\n")
    result = audit.verify(log)
    assert (result.bad_line, result.entries) == (4, 3) and "HMAC with the audit key" in result.problem
    unkeyed = {k: v for k, v in forged.items() if k != "key_id"}  # the legacy (pre-key) line format
    unkeyed["hash"] = audit.entry_hash(unkeyed)
    _rewrite(log, _lines(log)[:3] + [json.dumps(unkeyed) + "\n"])
    result = audit.verify(log)
    assert result.bad_line == 4 and "an unkeyed entry after keyed ones" in result.problem


def test_changed_or_missing_anchor_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    anchor = audit.anchor_path_for(log)
    body = json.loads(anchor.read_text())
    anchor.write_text(json.dumps({**body, "entries": 3}))
    assert "was changed (its signature does not match)" in audit.verify(log).problem
    anchor.unlink()
    result = audit.verify(log)
    assert not result.ok and "anchor file audit.log.anchor is missing" in result.problem


def test_key_file_is_private_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    import stat

    log = tmp_path / "audit.log"
    _write(log, 1)
    key = audit.key_path_for(log)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text().strip() not in log.read_text()
    key.chmod(0o644)
    with pytest.raises(audit.AuditError, match="readable by other accounts"):
        audit.append("login", user="x", role="clinician", path=log)
    assert "readable by other accounts" in audit.verify(log).problem


def test_rotation_is_logged_and_binds_the_new_key(tmp_path: Path, capsys) -> None:
    log = tmp_path / "audit.log"
    _write(log, 2)
    old = audit.load_keys(audit.key_path_for(log))
    assert main(["audit", "rotate-key", "--log", str(log)]) == 0
    assert "new key" in capsys.readouterr().out
    new = audit.load_keys(audit.key_path_for(log))
    assert new.current != old.current and set(old.keys) < set(new.keys)
    rotation = json.loads(_lines(log)[2])
    assert rotation["action"] == "key_rotated" and rotation["key_id"] == old.current
    assert rotation["detail"] == {"new_key_id": new.current, "old_key_id": old.current}
    after = audit.append("login", user="x", role="clinician", path=log)
    assert after["key_id"] == new.current
    assert audit.verify(log).ok and audit.verify(log).entries == 4
    # someone holding only the retired key cannot sign after the rotation
    forged = {**after, "seq": 5, "prev_hash": after["hash"], "key_id": old.current}
    forged["hash"] = audit.entry_hash(forged, old.keys[old.current])
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(forged) + "\n")
    result = audit.verify(log)
    assert result.bad_line == 5 and "a retired key was used" in result.problem


def test_legacy_unkeyed_prefix_still_verifies(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    prev, lines = audit.GENESIS, []
    for seq in (1, 2):  # as the unkeyed version of this module wrote them
        entry = {"seq": seq, "time": "2026-01-01T00:00:00+00:00", "user": "u", "role": "clinician",
                 "action": "login", "patient_id": None, "detail": {}, "prev_hash": prev}
        entry["hash"] = prev = audit.entry_hash(entry)
        lines.append(json.dumps(entry) + "\n")
    _rewrite(log, lines)
    audit.append("login", user="x", role="clinician", path=log)
    result = audit.verify(log)
    assert result.ok and result.entries == 3 and result.legacy == 2
    assert "2 older unkeyed entries" in result.describe()


def test_huge_values_are_cut_so_a_line_stays_small(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    entry = audit.append("view_patient", user="u", role="clinician", patient_id="X" * 10_000_000, path=log)
    assert len(entry["patient_id"]) < 400 and "cut; 10,000,000 characters" in entry["patient_id"]
    assert log.stat().st_size < 2000 and audit.verify(log).ok
