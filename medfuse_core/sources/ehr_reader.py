"""What the EHR readers (MIMIC-III, MIMIC-IV, MEDS) share: the record-reader interface, the import
statistics, the mimic3-benchmarks item map, and matching parsed rows back to the file's rows so that
problems name the file's row numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from io import StringIO

import numpy as np
import pandas as pd

from medfuse_core.problems import Problem
from medfuse_core.sources.labs import parse_times
from medfuse_core.sources.phenotypes import PhenotypeDefinitions, examples

MAX_AGE = 90.0  # reported age of patients older than 89, whose DOB MIMIC-III shifts to ~300 years before
VARIABLE_MAP_FILE = "itemid_to_variable_map_ready.csv"

# --------------------------------------------------------------------------------------- mappings


@cache
def _variable_map() -> pd.DataFrame:
    text = resources.files("medfuse_core.resources").joinpath("mimic3_benchmarks", VARIABLE_MAP_FILE).read_text()
    table = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    return table.rename(columns={"LEVEL2": "variable", "ITEMID": "itemid", "MIMIC LABEL": "label",
                                 "LINKSTO": "linksto", "UNITNAME": "unitname"})


def items_linked_to(linksto: str) -> pd.DataFrame:
    """itemid -> (variable, label) of the benchmark's 'ready' items of one table."""
    table = _variable_map()
    return table[table["linksto"] == linksto].set_index("itemid")[["variable", "label"]]


# ------------------------------------------------------------------------------ parse once, split


LAB_KEYS = ("time", "itemid", "item", "value_text")  # everything a lab row is kept or dropped by
VITAL_KEYS = ("time", "channel", "value_text")


def _key_frame(table: pd.DataFrame, keys: tuple[str, ...], file: str, parsed: bool) -> pd.DataFrame:
    """Comparable key columns of a raw (text) or parsed (contract) table."""
    out = {}
    for key in keys:
        if key == "time":
            times = table["time"] if parsed else parse_times(table["time"].astype(str), file)[0]
            out[key] = pd.Series(times).astype("datetime64[ns]").astype("int64").to_numpy()
        elif key == "itemid":
            ids = table["itemid"] if parsed else pd.to_numeric(table["itemid"].str.strip(), errors="coerce")
            out[key] = pd.Series(ids).astype("Int64").astype(str).to_numpy(dtype=object)
        elif key == "value_text" and not parsed:
            out[key] = table["value"].astype(str).to_numpy(dtype=object)
        elif key == "item" and not parsed:
            out[key] = table["item"].astype(str).str.strip().to_numpy(dtype=object)
        else:
            out[key] = table[key].astype(str).to_numpy(dtype=object)
    frame = pd.DataFrame(out)
    frame["_n"] = frame.groupby(list(keys), sort=False).cumcount()
    return frame


def align_rows(raw: pd.DataFrame, table: pd.DataFrame, keys: tuple[str, ...], file: str) -> np.ndarray | None:
    """For each row of the parsed `table`, its row in `raw`; None if they cannot be matched one to one.

    Rows with the same key are all kept or all dropped, and a stable sort keeps their order, so the
    n-th output row of a key is the n-th input row of that key.
    """
    if not len(table):
        return np.zeros(0, dtype=int)
    source = _key_frame(raw, keys, file, parsed=False)
    source["_row"] = np.arange(len(source))
    target = _key_frame(table, keys, file, parsed=True)
    matched = target.merge(source, on=[*keys, "_n"], how="left", validate="one_to_one")
    if matched["_row"].isna().any():
        return None
    return matched["_row"].to_numpy(dtype=int)


def renumber_problems(problems: list[Problem], file_rows: np.ndarray) -> list[Problem]:
    """Row numbers of problems found in a subset of a table's rows -> the file's data row numbers."""

    def row(match: re.Match) -> str:
        n = int(match.group(2))
        return match.group(1) + (str(int(file_rows[n - 1]) + 1) if 0 < n <= len(file_rows) else str(n))

    def rows(match: re.Match) -> str:
        return match.group(1) + re.sub(r"\d+", lambda m: row(re.match(r"()(\d+)", m.group(0))), match.group(2))

    out = []
    for p in problems:
        field = re.sub(r"^(row )(\d+)", row, p.field)
        message = re.sub(r"(in rows )([\d, ]+)", rows, p.message)
        out.append(Problem(p.severity, p.file, field, message))
    return out


@cache
def empty_table(kind) -> pd.DataFrame:
    return kind().table


# ----------------------------------------------------------------------------------------- reader


@dataclass
class ReaderStats:
    """What the reader found, for the import summary (rows are table rows, not records)."""

    tables: dict[str, str] = field(default_factory=dict)  # table -> file name used ("" when absent)
    lab_rows: int = 0  # rows read from LABEVENTS
    lab_rows_without_stay: int = 0  # no HADM_ID: outpatient labs, not importable
    lab_rows_unplaced: int = 0  # HADM_ID of no record read (no such admission, no ICU stay, --limit)
    lab_rows_placed: int = 0
    vital_rows_from_labs: int = 0
    vital_rows_from_chartevents: int = 0
    note_rows: int = 0
    notes_in_error: int = 0
    diagnosis_rows: int = 0
    icd10_codes: list[str] = field(default_factory=list)  # one entry per diagnosis row
    unknown_codes: list[str] = field(default_factory=list)

    def unmapped(self) -> dict[str, object]:
        return {
            "icd10_rows": len(self.icd10_codes),
            "icd10_examples": examples(self.icd10_codes),
            "icd10_unmapped_rows": len(self.icd10_codes),  # this reader does not map ICD-10
            "icd10_unmapped_examples": examples(self.icd10_codes),
            "unknown_icd9_rows": len(self.unknown_codes),
            "unknown_icd9_examples": examples(self.unknown_codes),
        }


class RecordReader:
    """The public face shared by the EHR readers (MIMIC-III, MIMIC-IV, MEDS): one record per row
    of `_unit_table()` (which has a record_id column), labels from `self.definitions`."""

    definitions: PhenotypeDefinitions

    def _unit_table(self) -> pd.DataFrame:
        raise TypeError(f"{type(self).__name__} must define _unit_table")

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.definitions.label_names

    @property
    def ids(self) -> list[str]:
        return list(self._unit_table()["record_id"])

    def __len__(self) -> int:
        return len(self._unit_table())
