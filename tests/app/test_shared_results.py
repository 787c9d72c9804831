"""app/state.py SharedResults: one computation per key for every session, concurrent askers wait, bounded."""

from __future__ import annotations

import threading
import time

import numpy as np

from app.state import SharedResults, approx_bytes


def test_concurrent_sessions_compute_once() -> None:
    cache = SharedResults()
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.2)  # an explanation takes a while: the other sessions arrive meanwhile
        return {"labs": np.zeros(10)}

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute(("P1", "d"), compute)))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.computed == 1 and cache.hits == 19
    assert all(r is results[0] for r in results)  # shared, not copied


def test_bounded_by_entries_and_bytes_least_recent_first() -> None:
    cache = SharedResults(max_entries=3, max_bytes=10 * 1024**2)
    for i in range(5):
        cache.get_or_compute(i, lambda: np.zeros(100))
    assert len(cache) == 3 and 0 not in cache and 4 in cache
    cache.get_or_compute(2, lambda: None)  # a hit refreshes 2
    cache.get_or_compute(5, lambda: np.zeros(100))
    assert 2 in cache and 3 not in cache
    big = SharedResults(max_entries=100, max_bytes=3 * 8000 + 2000)
    for i in range(10):
        big.get_or_compute(i, lambda: np.zeros(1000))  # 8,000 bytes each
    assert len(big) == 3 and big.nbytes <= big.max_bytes


def test_a_failed_computation_is_not_cached_and_others_retry() -> None:
    cache = SharedResults()
    try:
        cache.get_or_compute("k", lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    assert "k" not in cache and cache.get_or_compute("k", lambda: 7) == 7


def test_approx_bytes_counts_arrays() -> None:
    assert approx_bytes({"a": np.zeros((100, 100), np.float32)}) > 40_000
