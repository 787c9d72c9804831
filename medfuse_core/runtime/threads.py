"""Torch intra-op threads for one-patient interactive work (an explanation on a shared CPU)."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

import torch

THREADS_ENV = "MEDFUSE_LENS_TORCH_THREADS"  # intra-op threads for one patient's explanation (default 1)
_THREADS_LOCK = threading.Lock()
_threads_users = 0  # interactive_threads blocks running now, in any session
_threads_before = 1  # the setting before the first of them


def _process_num_threads() -> int:
    """torch's intra-op thread setting as a new thread gets it (not the calling thread's own copy)."""
    out: list[int] = []
    reader = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    reader.start()
    reader.join()
    return out[0]


@contextmanager
def interactive_threads() -> Iterator[None]:
    """Run a one-patient computation (explain(): hundreds of small ops) with few intra-op threads.

    On a shared CPU, PyTorch's OpenMP threads wait at a barrier after every op; when another process
    holds a core, each barrier waits for a descheduled thread, and an explanation that takes 0.1 s with
    one thread took 3-11 s with two (measured on the 2-core dev machine under load; benchmarks/
    dashboard_speed.py). One patient's tensors are too small to gain from more threads.
    $MEDFUSE_LENS_TORCH_THREADS overrides the 1.

    The setting is process-wide (what new threads start with) and sessions run in threads of one
    process, so the blocks are reference-counted: the first one in saves the setting, the last one out
    restores it, and a session leaving never undoes the setting under another one still inside. PyTorch
    also keeps a copy per thread once the thread has run an op, so each block sets it in its own thread,
    and the saved value is read in a new thread (the calling thread's copy may be a block's leftover).
    """
    global _threads_users, _threads_before
    try:
        wanted = max(1, int(os.environ.get(THREADS_ENV, "1")))
    except ValueError:
        wanted = 1
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_before = _process_num_threads()
        _threads_users += 1
        torch.set_num_threads(wanted)  # the process's and this thread's (whatever its own copy says)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0 and _threads_before != wanted:
                torch.set_num_threads(_threads_before)
