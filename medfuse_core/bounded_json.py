"""JSON read from outside (bundles, uploads, checkpoints, logs), with its size and nesting bounded first.

Why: Python's `json` parser recurses once per nested bracket, so a file of 100,000 `[` raises
RecursionError (which nobody catches: it is not a ValueError) and a 1 GB string takes the memory.
Every reader of outside JSON goes through `loads`: the size is checked on the raw bytes, the nesting
depth is counted by a scan that skips string contents (a regular expression, C speed), and only then
is the text parsed. Every failure is a `JsonLimitError` (a ValueError) with a message for a person;
RecursionError cannot escape from here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

MAX_BYTES = 16 * 1024**2  # a checkpoint config with its lab vocabulary is ~100 KB; a patient.json ~1 KB
MAX_DEPTH = 64  # the deepest legitimate file here (config.json) nests 5 levels

# A whole JSON string (so brackets inside it are skipped), or one bracket.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonLimitError(ValueError):
    """The text is not JSON within the limits; `field` says where (e.g. 'line 3 column 7'), or ''."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


def nesting_depth(data: bytes, stop_at: int | None = None) -> int:
    """The deepest bracket nesting in `data` (strings skipped); stops counting once past `stop_at`."""
    depth = deepest = 0
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_at is not None and deepest > stop_at:
                    return deepest
        elif token in (b"]", b"}"):
            depth = max(0, depth - 1)
    return deepest


def loads(data: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data` as UTF-8 JSON within the limits; JsonLimitError (a ValueError) naming what is wrong."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise JsonLimitError(f"expected at most {_size(max_bytes)} of JSON; the file is {_size(len(raw))}")
    if nesting_depth(raw, stop_at=max_depth) > max_depth:
        raise JsonLimitError(f"expected JSON nested at most {max_depth} levels deep; it nests deeper "
                             "(refused before parsing)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JsonLimitError(f"expected UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonLimitError(f"expected valid JSON: {exc.msg}", f"line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # unreachable after the depth scan; kept so that it can never escape
        raise JsonLimitError(f"expected JSON nested at most {max_depth} levels deep") from None


def read(path: str | Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """`loads` of a file, reading at most `max_bytes` + 1 bytes of it (a huge file is never read whole)."""
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
        if len(raw) > max_bytes:
            size = os.fstat(fh.fileno()).st_size
            raise JsonLimitError(f"expected at most {_size(max_bytes)} of JSON; the file is {_size(size)}")
    return loads(raw, max_bytes=max_bytes, max_depth=max_depth)


def _size(n: int) -> str:
    if n >= 1024**2:
        return f"{n / 1024**2:,.0f} MB" if n % 1024**2 == 0 else f"{n / 1024**2:,.1f} MB"
    if n >= 1024:
        return f"{n / 1024:,.0f} KB"
    return f"{n:,} bytes"
