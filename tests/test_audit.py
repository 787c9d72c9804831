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
    assert first["hash"] == audit.entry_hash(first)


def test_changed_line_is_named(tmp_path: Path) -> None:
    def edit(lines: list[str]) -> None:
        lines[2] = lines[2].replace('"user3"', '"mallory"')

    result = _verify_after(tmp_path, edit)
    assert (result.ok, result.bad_line, result.entries) == (False, 3, 2)
    assert "hash does not match" in result.problem


def test_changed_line_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log)
    lines = _lines(log)
    forged = json.loads(lines[2])
    forged["patient_id"] = "P99999"
    forged["hash"] = audit.entry_hash(forged)
    lines[2] = json.dumps(forged) + "\n"
    _rewrite(log, lines)
    result = audit.verify(log)
    assert result.bad_line == 4 and "prev_hash" in result.problem


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
