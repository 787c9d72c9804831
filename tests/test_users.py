"""Local sign-in users: salted scrypt hashes, the users file, and `python -m medfuse_core users add`."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from medfuse_core.cli import main
from medfuse_core.users import (UsersFileError, add_user, authenticate, hash_password, load_users, role_allows,
                                verify_password)


def test_hash_is_salted_and_verifies() -> None:
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and a.startswith("scrypt$") and "correct horse" not in a
    assert verify_password("correct horse", a) and verify_password("correct horse", b)
    assert not verify_password("correct hors", a)
    assert not verify_password("", a)


def test_malformed_hash_is_an_error_not_a_match() -> None:
    for stored in ("correct horse", "scrypt$1$8$1$AAAA$AAAA", "scrypt$16384$8$1$not base64!$xx"):
        with pytest.raises(ValueError):
            verify_password("correct horse", stored)


def test_roles_are_ordered() -> None:
    assert role_allows("researcher", "clinician") and role_allows("researcher", "researcher")
    assert role_allows("clinician", "clinician") and not role_allows("clinician", "researcher")
    assert not role_allows(None, "clinician") and not role_allows("admin", "clinician")


def test_add_then_authenticate(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    add_user(path, "alice", "clinician", "alice-pass-1")
    add_user(path, "rob", "researcher", "rob-pass-22")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "alice-pass-1" not in path.read_text()
    users = load_users(path)
    assert {u.name: u.role for u in users.values()} == {"alice": "clinician", "rob": "researcher"}
    assert authenticate(users, "alice", "alice-pass-1").role == "clinician"
    assert authenticate(users, "alice", "rob-pass-22") is None  # wrong password
    assert authenticate(users, "carol", "alice-pass-1") is None  # unknown user
    with pytest.raises(UsersFileError, match="already exists"):
        add_user(path, "alice", "researcher", "another-pass")
    add_user(path, "alice", "researcher", "another-pass", replace=True)
    users = load_users(path)
    assert authenticate(users, "alice", "another-pass").role == "researcher"
    assert authenticate(users, "alice", "alice-pass-1") is None


@pytest.mark.parametrize("name, role, password, field", [
    ("al ice", "clinician", "long-enough", "name"),
    ("alice", "admin", "long-enough", "role"),
    ("alice", "clinician", "short", "password"),
])
def test_add_refuses_bad_input(tmp_path: Path, name: str, role: str, password: str, field: str) -> None:
    with pytest.raises(UsersFileError, match=field):
        add_user(tmp_path / "users.json", name, role, password)
    assert not (tmp_path / "users.json").exists()


@pytest.mark.parametrize("text, where", [
    ("{not json", "not valid JSON (line 1"),
    ('{"people": []}', "users"),
    ('{"users": {"alice": {"role": "clinician", "password": "hunter22"}}}', "users.alice.password"),
    ('{"users": {"alice": {"role": "boss", "password": "x"}}}', "users.alice.role"),
    ('{"users": {"alice": "clinician"}}', "users.alice"),
])
def test_malformed_users_file_names_the_file_and_entry(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(text)
    with pytest.raises(UsersFileError) as info:
        load_users(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_missing_users_file(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="no such users file"):
        load_users(tmp_path / "nope.json")


def test_cli_users_add_from_stdin(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass\n"))
    assert main(["users", "add", "alice", "--role", "researcher", "--file", str(path), "--password-stdin"]) == 0
    assert "alice (researcher)" in capsys.readouterr().out
    assert authenticate(load_users(path), "alice", "s3cret-pass").role == "researcher"
    assert json.loads(path.read_text())["users"]["alice"]["password"].startswith("scrypt$")

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "bob", "--role", "clinician", "--file", str(path), "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err


def test_cli_users_add_prompts_twice(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "users.json"
    answers = iter(["first-password", "other-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["users", "add", "alice", "--role", "clinician", "--file", str(path)]) == 2
    assert "differ" in capsys.readouterr().err and not path.exists()
    answers = iter(["same-password", "same-password"])
    monkeypatch.setenv("MEDFUSE_LENS_USERS", str(path))  # --file defaults to the dashboard's users file
    assert main(["users", "add", "alice", "--role", "clinician"]) == 0
    assert authenticate(load_users(path), "alice", "same-password") is not None


def test_deeply_nested_users_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text('{"users": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UsersFileError, match="nested at most 8 levels deep"):
        load_users(path)
