"""Sign-in throttling: free failures, then doubling waits up to a cap; success and time clear it."""

from __future__ import annotations

import threading

from medfuse_core.throttle import SignInThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waits_start_after_the_free_failures_and_double_up_to_the_cap() -> None:
    clock = Clock()
    throttle = SignInThrottle(free_failures=4, first_wait_s=10, max_wait_s=35, clock=clock)
    assert [throttle.failed("Alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.retry_after("alice") == 0.0
    assert throttle.failed("alice ") == 10.0  # the name as typed: trimmed, any case
    assert throttle.retry_after("ALICE") == 10.0
    clock.now += 4
    assert throttle.retry_after("alice") == 6.0
    assert throttle.failed("alice") == 20.0 and throttle.failed("alice") == 35.0  # 40 capped at 35
    assert throttle.retry_after("bob") == 0.0  # other names are not touched


def test_success_and_a_quiet_hour_clear_the_record() -> None:
    clock = Clock()
    throttle = SignInThrottle(free_failures=2, first_wait_s=10, forget_after_s=3600, clock=clock)
    throttle.failed("alice")
    assert throttle.failed("alice") == 10.0
    throttle.succeeded("alice")
    assert throttle.retry_after("alice") == 0.0 and throttle.failed("alice") == 0.0  # free again
    throttle.failed("bob"), throttle.failed("bob")
    clock.now += 3601
    assert throttle.retry_after("bob") == 0.0 and throttle.failed("bob") == 0.0


def test_memory_is_bounded_by_dropping_the_oldest_names() -> None:
    clock = Clock()
    throttle = SignInThrottle(free_failures=1, max_names=3, clock=clock)
    for i, name in enumerate(("a", "b", "c", "d")):
        clock.now = 1000.0 + i
        throttle.failed(name)
    assert throttle.retry_after("a") == 0.0  # the oldest went to make room
    assert all(throttle.retry_after(n) > 0 for n in ("b", "c", "d"))


def test_failures_from_many_threads_are_all_counted() -> None:
    throttle = SignInThrottle(free_failures=401, first_wait_s=10, clock=Clock())
    threads = [threading.Thread(target=lambda: [throttle.failed("alice") for _ in range(50)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert throttle.failed("alice") == 10.0  # failure 401: exactly the first wait, so all 400 were counted


def test_parallel_sign_ins_for_one_name_check_exactly_the_free_failures() -> None:
    """30 sessions submitting a wrong password for one name at once (real scrypt checks): exactly 5 passwords
    are checked, the other 25 are told to wait without a check. Separate check and record let 26 through."""
    from medfuse_core.users import LocalUser, authenticate, hash_password

    users = {"alice": LocalUser("alice", "clinician", hash_password("right-password"))}
    throttle = SignInThrottle()
    checked, waited = [], []
    barrier = threading.Barrier(30)

    def session() -> None:
        def check():
            checked.append(1)
            return authenticate(users, "alice", "wrong-password")

        barrier.wait()
        user, wait = throttle.attempt("Alice", check)
        assert user is None
        if wait > 0:
            waited.append(wait)

    threads = [threading.Thread(target=session) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(checked) == 5 and len(waited) == 25
    assert throttle.attempt("alice", lambda: users["alice"])[1] > 0  # even the right password waits now


def test_attempt_clears_on_success_and_other_names_are_free() -> None:
    throttle = SignInThrottle(free_failures=2, clock=Clock())
    assert throttle.attempt("a", lambda: None) == (None, 0.0)
    assert throttle.attempt("a", lambda: "user-a") == ("user-a", 0.0)  # success clears the record
    assert throttle.attempt("a", lambda: None) == (None, 0.0)
    assert throttle.attempt("a", lambda: None) == (None, 0.0)  # the 2nd failure starts the wait
    assert throttle.attempt("a", lambda: "user-a")[1] == 30.0
    assert throttle.attempt("b", lambda: "user-b") == ("user-b", 0.0)


def test_event_budget_counts_what_it_leaves_out() -> None:
    from medfuse_core.throttle import EventBudget

    clock = Clock()
    budget = EventBudget(per_window=3, window_s=60, clock=clock)
    assert [budget.take() for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    clock.now += 61
    assert budget.take() == (True, 2) and budget.take() == (True, 0)
