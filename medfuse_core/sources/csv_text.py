"""A CSV file of a bundle read as a table of text cells, whatever a spreadsheet saved it as.

UTF-8 (with or without its byte-order mark), UTF-16 and Latin-1 exports are read, each fallback said;
a malformed row or a line longer than the CSV reader's field limit is left out with a warning, never the
file; a link swapped in at the last moment is not followed. The cells are parsed by the table readers
(`labs.py`, `vitals.py`, the bundle's index files).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd

from medfuse_core.problems import Problem, error, excerpt, warning

MAX_CSV_LINE_CHARS = 131_072  # Python's csv field limit: a longer line would be dropped in silence


def read_csv_text(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """All cells as strings ("" for empty). A malformed line is left out with a warning, not the file;
    None (with an error problem) only if the file cannot be read as CSV at all."""
    raw = _read_bytes_no_link(path)
    utf16 = _utf16_encoding(raw)
    if utf16:  # spreadsheet "Unicode text" exports
        text = raw.decode(utf16, errors="replace").lstrip("\ufeff")
        how = "it starts with its byte-order mark" if utf16 == "utf-16" else "every other byte is 0"
        problems.append(warning(str(path), "", f"expected UTF-8 text; read as UTF-16 ({how})"))
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            # Spreadsheet exports in Latin-1 ("µg/L") are common; read them rather than lose the file.
            text = raw.decode("latin-1")
            problems.append(warning(str(path), "", f"expected UTF-8 text ({exc.reason} at byte {exc.start}); read as Latin-1"))
    if not text.strip():
        return pd.DataFrame()
    text = _without_long_lines(text, path, problems)
    bad_lines: list[list[str]] = []

    def keep_bad_line(fields: list[str]) -> None:
        bad_lines.append(fields)
        return None

    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True,
                            engine="python", on_bad_lines=keep_bad_line)
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        problems.append(error(str(path), "", f"expected comma-separated rows under one header line: {exc}; file left out"))
        return None
    n_columns = len(table.columns)
    for fields in bad_lines[:20]:
        problems.append(warning(str(path), "row", f"expected {n_columns} fields, found {len(fields)} in "
                                f"{excerpt(','.join(fields), 80)}; row left out"))
    if len(bad_lines) > 20:
        problems.append(warning(str(path), "row", f"{len(bad_lines) - 20} more malformed rows left out"))
    return table


def _read_bytes_no_link(path: Path) -> bytes:
    """The file's bytes, refusing to follow a link at the last step (O_NOFOLLOW), so a link swapped in
    after the checks is not read either."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _utf16_encoding(raw: bytes) -> str | None:
    """'utf-16' when the bytes carry a UTF-16 byte-order mark, 'utf-16-le'/'-be' when every other byte of
    the start is 0 (ASCII text in UTF-16 without a mark), else None."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    head = raw[:400]
    if len(head) >= 8 and len(head) % 2 == 0:
        if head[1::2].count(0) == len(head) // 2 and head[0::2].count(0) == 0:
            return "utf-16-le"
        if head[0::2].count(0) == len(head) // 2 and head[1::2].count(0) == 0:
            return "utf-16-be"
    return None


def _without_long_lines(text: str, path: Path, problems: list[Problem]) -> str:
    """`text` without its lines over MAX_CSV_LINE_CHARS characters, each reported (the CSV reader would
    drop such a row without a word)."""
    if len(text) <= MAX_CSV_LINE_CHARS or max(map(len, text.splitlines())) <= MAX_CSV_LINE_CHARS:
        return text
    kept = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if len(line.rstrip("\r\n")) > MAX_CSV_LINE_CHARS:
            problems.append(warning(str(path), f"line {number}", f"expected at most {MAX_CSV_LINE_CHARS:,} characters "
                                                                f"per line; found {len(line.rstrip()):,}; row left out"))
        else:
            kept.append(line)
    return "".join(kept)
