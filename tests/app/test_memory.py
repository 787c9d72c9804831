"""app/memory.py: the server's C heap limits are accepted by glibc, and trimming gives freed memory back."""

from __future__ import annotations

import platform

import pytest

from app.memory import limit_arenas, trim


def _rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_the_arena_limit_and_trim_returns_freed_small_blocks() -> None:
    assert limit_arenas() is True
    blocks = [bytearray(16 * 1024) for _ in range(10_000)]  # 160 MB of heap blocks (below the mmap threshold)
    del blocks[::2]  # 80 MB freed as holes between live blocks: the heap cannot shrink from its top
    before = _rss_mib()
    trim()
    assert before - _rss_mib() > 30  # the holes' pages went back to the system
    del blocks
