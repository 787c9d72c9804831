"""Sign-in throttling: after a few wrong passwords for one user name, further tries wait, longer each time.

Why: a password form with no limit lets anyone who can reach the page try passwords as fast as scrypt
allows. Keyed by the user name as typed (trimmed, lower-cased), known or not, so the lock says
nothing about which names exist. The cost is that someone can keep one user locked out by failing on
purpose; the wait is therefore capped (`max_wait_s`), and a successful sign-in clears the record.
One instance is shared by every session of the server process (thread-safe); it is in memory, so a
restart forgets it.

`attempt` is what a sign-in form calls: the wait check, the password check and the record of its outcome
happen under one lock per user name, so sessions submitting in parallel for one name are checked one
after the other and exactly `free_failures` passwords are checked before the first wait (when the check
and the record were separate, 30 parallel submissions got 26 passwords checked).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

T = TypeVar("T")
_NAME_LOCKS = 256  # striped per-name locks: bounded memory, one name always maps to the same lock


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass
class SignInThrottle:
    free_failures: int = 5  # wrong passwords checked before the first wait (the last of them starts it)
    first_wait_s: float = 30.0  # the first wait; it doubles with every further failure
    max_wait_s: float = 900.0
    forget_after_s: float = 3600.0  # a name with no failure for this long starts again from zero
    max_names: int = 10_000  # memory bound: past it, names whose records are stale (or oldest) are dropped
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _name_locks: tuple[threading.Lock, ...] = field(
        default_factory=lambda: tuple(threading.Lock() for _ in range(_NAME_LOCKS)), repr=False)

    @staticmethod
    def key(name: str) -> str:
        return name.strip().lower()[:64]

    def attempt(self, name: str, check: Callable[[], T | None]) -> tuple[T | None, float]:
        """(what `check` returned, 0) after checking, recording a failure when it returned None and clearing
        the record otherwise; or (None, seconds to wait) without calling `check` while `name` must wait.
        Atomic per name: see the module docstring."""
        key = self.key(name)
        with self._name_locks[hash(key) % len(self._name_locks)]:
            wait = self.retry_after(name)
            if wait > 0:
                return None, wait
            result = check()
            if result is None:
                self.failed(name)
            else:
                self.succeeded(name)
            return result, 0.0

    def retry_after(self, name: str) -> float:
        """Seconds before `name` may try again (0: now)."""
        with self._lock:
            record = self._current(self.key(name))
            return max(0.0, record.locked_until - self.clock()) if record else 0.0

    def failed(self, name: str) -> float:
        """Record a wrong password for `name`; returns the wait it now has (0 while failures are free)."""
        with self._lock:
            key, now = self.key(name), self.clock()
            record = self._current(key)
            if record is None:
                self._make_room(now)
                record = self._records.setdefault(key, _Record())
            record.failures += 1
            record.last_failure = now
            extra = record.failures - self.free_failures + 1  # the free_failures-th failure starts the first wait
            if extra > 0:
                record.locked_until = now + min(self.max_wait_s, self.first_wait_s * 2 ** (extra - 1))
            return max(0.0, record.locked_until - now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._records.pop(self.key(name), None)

    def clear(self) -> None:
        """Forget every record (a fresh process; tests)."""
        with self._lock:
            self._records.clear()

    def _make_room(self, now: float) -> None:
        if len(self._records) < self.max_names:
            return
        for key in [k for k, r in self._records.items() if now - r.last_failure > self.forget_after_s]:
            del self._records[key]
        while len(self._records) >= self.max_names:
            del self._records[min(self._records, key=lambda k: self._records[k].last_failure)]

    def _current(self, key: str) -> _Record | None:
        record = self._records.get(key)
        if record is not None and self.clock() - record.last_failure > self.forget_after_s:
            del self._records[key]
            return None
        return record


SIGN_IN_THROTTLE = SignInThrottle()  # the server process's one instance


@dataclass
class EventBudget:
    """At most `per_window` events per `window_s` seconds pass; the rest are counted, and the count is handed
    to the next event that passes. Why: failed and throttled sign-ins are audited, and without a budget anyone
    who can reach the sign-in page grows the audit log as fast as they can submit (about 2 KiB/s)."""

    per_window: int = 30
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _window_start: float = field(default=-1e18, repr=False)
    _passed: int = field(default=0, repr=False)
    _suppressed: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> tuple[bool, int]:
        """(whether this event may be logged, how many were left out since the last one that was)."""
        with self._lock:
            now = self.clock()
            if now - self._window_start >= self.window_s:
                self._window_start, self._passed = now, 0
            if self._passed >= self.per_window:
                self._suppressed += 1
                return False, 0
            self._passed += 1
            left_out, self._suppressed = self._suppressed, 0
            return True, left_out


FAILED_SIGN_IN_AUDIT = EventBudget()  # failed/throttled sign-ins written to the audit log, per server process
