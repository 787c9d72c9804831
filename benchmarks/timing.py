"""Timing helpers shared by the speed benchmarks: one call timed, and latency percentiles."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def latency_stats(values: list[float]) -> dict[str, float]:
    """n, median, nearest-rank p95 and max of per-call seconds."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(values), "p50_s": statistics.median(values), "p95_s": p95, "max_s": ordered[-1]}
