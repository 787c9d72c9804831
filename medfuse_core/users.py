"""Local sign-in: a users file of salted scrypt password hashes, and the dashboard's two roles.

The file is JSON, written by `python -m medfuse_core users add` (never by hand with a plain password):
    {"users": {"alice": {"role": "clinician", "password": "scrypt$16384$8$1$<salt b64>$<key b64>"}}}
A hash names its own scrypt parameters, so they can be raised later without breaking old entries.
Checking a password compares with `hmac.compare_digest` and costs the same for unknown users, so the
answer says nothing about which of the two was wrong.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medfuse_core import bounded_json
from medfuse_core.problems import DataError

USERS_ENV = "MEDFUSE_LENS_USERS"
ROLES = ("clinician", "researcher")  # each role may do everything the roles before it may
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
MIN_PASSWORD = 8
SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # ~16 MiB and a few tens of ms per check
_MAXMEM = 64 * 1024 * 1024
_KEY_BYTES = 32


class UsersFileError(DataError):
    """The users file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class LocalUser:
    name: str
    role: str
    password: str  # the scrypt hash string, never the password


def role_allows(role: str | None, needed: str) -> bool:
    """Whether `role` may do what `needed` may (researcher > clinician; unknown roles may nothing)."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


# ---------------------------------------------------------------------------------------- hashes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """'scrypt$N$r$p$salt$key' with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16) if salt is None else salt
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT["n"], r=SCRYPT["r"], p=SCRYPT["p"],
                         maxmem=_MAXMEM, dklen=_KEY_BYTES)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${_b64(salt)}${_b64(key)}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key); ValueError naming what is wrong."""
    parts = stored.split("$") if isinstance(stored, str) else []
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt hash ('scrypt$N$r$p$salt$key'); is it a plain password?")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise ValueError(f"malformed scrypt hash ({exc})") from None
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16 or len(salt) < 8 or len(key) < 16:
        raise ValueError("scrypt parameters out of range")
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the hash `stored` (constant-time comparison)."""
    n, r, p, salt, key = _parse_hash(stored)
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(key))
    return hmac.compare_digest(candidate, key)


@functools.cache
def _dummy_hash() -> str:
    """What an unknown user's password is checked against, so that the check costs the same."""
    return hash_password(secrets.token_urlsafe(16))


# ------------------------------------------------------------------------------------ users file


def load_users(path: str | Path) -> dict[str, LocalUser]:
    """Every user in the file; UsersFileError (naming the file and the entry) when it cannot be used."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsersFileError(str(path), "", "no such users file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(str(path), "", f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = bounded_json.loads(text, max_bytes=4 * 1024**2, max_depth=8)
    except bounded_json.JsonLimitError as exc:
        where = f"{exc.field}: " if exc.field else ""
        raise UsersFileError(str(path), "", f"not valid JSON ({where}{exc.message})") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise UsersFileError(str(path), "users", 'expected {"users": {"NAME": {"role": ..., "password": ...}}}')
    users = {}
    for name, entry in data["users"].items():
        field = f"users.{name}"
        if not NAME_PATTERN.fullmatch(name):
            raise UsersFileError(str(path), field, "a user name is 1-64 letters, digits or . _ @ + -")
        if not isinstance(entry, dict):
            raise UsersFileError(str(path), field, "expected an object with role and password")
        if entry.get("role") not in ROLES:
            raise UsersFileError(str(path), f"{field}.role", f"{entry.get('role')!r} is not one of {', '.join(ROLES)}")
        try:
            _parse_hash(entry.get("password"))
        except ValueError as exc:
            raise UsersFileError(str(path), f"{field}.password", str(exc)) from None
        users[name] = LocalUser(name, entry["role"], entry["password"])
    return users


def authenticate(users: dict[str, LocalUser], name: str, password: str) -> LocalUser | None:
    """The user when name and password match, else None; an unknown name costs as much as a wrong password."""
    user = users.get(name.strip())
    ok = verify_password(password, user.password if user else _dummy_hash())
    return user if ok and user is not None else None


def add_user(path: str | Path, name: str, role: str, password: str, *, replace: bool = False) -> LocalUser:
    """Add (or with `replace`, reset) one user; the file is created if missing and rewritten atomically (mode 600)."""
    path = Path(path)
    if not NAME_PATTERN.fullmatch(name):
        raise UsersFileError(str(path), "name", f"{name!r}: a user name is 1-64 letters, digits or . _ @ + -")
    if role not in ROLES:
        raise UsersFileError(str(path), "role", f"{role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UsersFileError(str(path), "password", f"at least {MIN_PASSWORD} characters")
    existing = load_users(path) if path.exists() else {}
    if name in existing and not replace:
        raise UsersFileError(str(path), f"users.{name}", "already exists (use --replace to set a new password or role)")
    existing[name] = LocalUser(name, role, hash_password(password))
    body = {"users": {u.name: {"role": u.role, "password": u.password} for u in existing.values()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp files are 0600
            json.dump(body, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return existing[name]
