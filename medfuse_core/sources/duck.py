"""DuckDB helpers shared by the MIMIC-IV and MEDS readers: bounded connections, table files, views.

Big event tables (MIMIC-IV chartevents: ~330 million rows) never pass through pandas whole. They are
scanned by DuckDB with projection and filter pushdown, grouped and ordered in SQL, and handed to
Python in Arrow record batches (`stream`). A connection has a memory limit and a temp directory, so
a sort larger than the limit spills to disk instead of growing the process.

Tables are found by name ignoring case and extension (`.csv`, `.csv.gz`, `.parquet`), and exposed as
views whose column names are lower-cased. CSV files are read with every column as text (`all_varchar`),
as the MIMIC-III reader reads them: lab values are text, and type sniffing on a sample can fail on a
row millions of lines further down. SQL casts (`TRY_CAST`) where a number or time is needed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from medfuse_core.problems import DataError

TABLE_SUFFIXES = (".csv.gz", ".csv", ".parquet")
BATCH_ROWS = 200_000  # rows per Arrow batch handed to Python
CHUNK_ROWS = 500_000  # rows parsed at once per modality (a chunk ends on a record boundary)
DEFAULT_MEMORY_LIMIT = "2GB"
_SKIP_DIRS = {"files"}  # MIMIC-CXR image tree: hundreds of thousands of folders, no tables


def connect(memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None,
            temp_dir: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a memory limit, a spill directory and (by default) <= 2 threads."""
    con = duckdb.connect(":memory:")
    temp = Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir()) / "medfuse_duckdb"
    temp.mkdir(parents=True, exist_ok=True)
    threads = threads if threads is not None else max(1, min(2, os.cpu_count() or 1))
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET temp_directory = '{_sql_text(str(temp))}'")
    con.execute("SET preserve_insertion_order = false")  # lets scans stream; every query says ORDER BY
    return con


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def quote(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def table_name(path: Path) -> str | None:
    """`LabEvents.csv.gz` -> "labevents"; None for a file that is not a table."""
    name = path.name.lower()
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_table_files(root: Path, depth: int = 3) -> tuple[dict[str, Path], list[tuple[str, Path, Path]]]:
    """Table name (lower case) -> file, searching `root` and its subfolders up to `depth` levels.

    Returns the files and the duplicates ignored (name, file used, file ignored); shallower and then
    alphabetically first files win, so `hosp/labevents.csv.gz` is used over a copy further down.
    """
    found: dict[str, Path] = {}
    duplicates: list[tuple[str, Path, Path]] = []
    level = [root]
    for _ in range(depth):
        next_level: list[Path] = []
        for folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir():
                    if entry.name.lower() not in _SKIP_DIRS and not entry.name.startswith("."):
                        next_level.append(path)
                    continue
                name = table_name(path)
                if name is None:
                    continue
                if name in found:
                    duplicates.append((name, found[name], path))
                else:
                    found[name] = path
        level = next_level
    return found, duplicates


def source_sql(path: Path | str | list[Path]) -> str:
    """A DuckDB table function over a CSV(.gz) or Parquet file (or a glob / list of Parquet files)."""
    if isinstance(path, list):
        files = ", ".join(f"'{_sql_text(str(p))}'" for p in path)
        return f"read_parquet([{files}], union_by_name = true)"
    text = _sql_text(str(path))
    if str(path).lower().endswith(".parquet"):
        return f"read_parquet('{text}', union_by_name = true)"
    return (f"read_csv('{text}', header = true, all_varchar = true, auto_detect = true, "
            "sample_size = 20480, strict_mode = false, encoding = 'utf-8', ignore_errors = false)")


def columns_of(con: duckdb.DuckDBPyConnection, source: str, file: str) -> dict[str, str]:
    """lower-case column name -> name as written, for a table function; DataError if unreadable."""
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    except duckdb.Error as exc:
        raise DataError(file, "", f"expected a readable table (CSV with a header line, or Parquet): "
                        f"{str(exc).splitlines()[0]}") from None
    out: dict[str, str] = {}
    for row in described:
        out.setdefault(str(row[0]).replace("\ufeff", "").strip().lower(), str(row[0]))
    return out


def create_view(con: duckdb.DuckDBPyConnection, view: str, path: Path | list[Path],
                required: tuple[str, ...] = (), wanted: tuple[str, ...] | None = None,
                file: str | None = None, expected: str = "") -> set[str]:
    """A view `view` over a table file with lower-case column names; the set of its columns.

    Only `required` + `wanted` columns are selected when `wanted` is given (projection pushdown).
    Raises DataError naming the file and the first required column it lacks.
    """
    source = source_sql(path)
    file = file or (str(path[0].parent) if isinstance(path, list) else str(path))
    columns = columns_of(con, source, file)
    for name in required:
        if name not in columns:
            found = ", ".join(columns) if columns else "no columns"
            what = f" ({expected})" if expected else ""
            raise DataError(file, name, f"expected columns {', '.join(required)}{what}; found {found}")
    keep = [n for n in columns if wanted is None or n in required or n in wanted]
    select = ", ".join(f"{quote(columns[n])} AS {quote(n)}" for n in keep)
    con.execute(f"CREATE OR REPLACE VIEW {quote(view)} AS SELECT {select} FROM {source}")
    return set(keep)


def stream(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None,
           batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """Run `sql` on a cursor of its own and yield the result as pandas frames of <= batch_rows rows.

    Each call uses a new cursor, so several results can be consumed side by side.
    """
    cursor = con.cursor()
    try:
        relation = cursor.sql(sql, params=params or None)
        # DuckDB >= 1.4 names it to_arrow_reader; fetch_record_batch before
        reader = (relation.to_arrow_reader(batch_rows) if hasattr(relation, "to_arrow_reader")
                  else relation.fetch_record_batch(batch_rows))
        for batch in reader:
            if batch.num_rows:
                yield pa.Table.from_batches([batch]).to_pandas()
    except duckdb.Error as exc:
        raise DataError("duckdb", "", f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        cursor.close()


def fetch_df(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pd.DataFrame:
    """A small query result as one pandas frame."""
    try:
        return con.execute(sql, params or []).fetch_df()
    except duckdb.Error as exc:
        raise DataError("duckdb", "", f"query failed: {str(exc).splitlines()[0]}") from None


# ------------------------------------------------------------------------------ rows by record


class RecordRows:
    """Rows of one query ordered by record position, handed out record by record.

    `parse(raw)` turns a chunk of raw rows (complete records only) into (table, position per row);
    without it the raw rows are handed out. Records must be asked for in increasing position.
    """

    def __init__(self, frames: Iterator[pd.DataFrame], parse: Callable | None = None, chunk_rows: int = CHUNK_ROWS):
        self._frames = frames
        self._parse = parse
        self._chunk_rows = chunk_rows
        self._carry: list[pd.DataFrame] = []
        self._table: pd.DataFrame | None = None
        self._groups: dict[int, np.ndarray] = {}
        self._ready_until = -1  # every record up to this position is complete in _groups
        self._done = False

    def take(self, position: int) -> pd.DataFrame | None:
        while position > self._ready_until and not self._done:
            self._next_chunk()
        rows = self._groups.pop(position, None)
        if rows is None or self._table is None:
            return None
        return self._table.iloc[rows].reset_index(drop=True)

    def _next_chunk(self) -> None:
        parts, n = self._carry, sum(len(p) for p in self._carry)
        last = int(parts[-1]["position"].iloc[-1]) if parts else None
        for frame in self._frames:
            parts.append(frame)
            n += len(frame)
            first_new, last = int(frame["position"].iloc[0]), int(frame["position"].iloc[-1])
            if n >= self._chunk_rows and (first_new != last or int(parts[0]["position"].iloc[0]) != last):
                break
        else:
            self._done = True
        raw = pd.concat(parts, ignore_index=True) if parts else None
        self._carry = []
        if raw is None or not len(raw):
            self._table, self._groups, self._ready_until = None, {}, np.iinfo(np.int64).max
            return
        if self._done:
            self._ready_until = np.iinfo(np.int64).max
        else:
            complete = (raw["position"] < last).to_numpy()
            self._carry = [raw[~complete].reset_index(drop=True)]
            raw = raw[complete].reset_index(drop=True)
            self._ready_until = last - 1
        positions = raw["position"].to_numpy(dtype=np.int64)
        raw = raw.drop(columns=["position"])
        if self._parse is not None and len(raw):
            self._table, positions = self._parse(raw, positions)
        else:
            self._table = raw
        self._groups = group_positions(positions)


def group_positions(positions: np.ndarray) -> dict[int, np.ndarray]:
    """record position -> row numbers (in order) of the rows with that position."""
    if not len(positions):
        return {}
    order = np.argsort(positions, kind="stable")
    keys, starts = np.unique(positions[order], return_index=True)
    return dict(zip(keys.tolist(), np.split(order, starts[1:])))
