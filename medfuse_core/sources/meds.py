"""MEDS (Medical Event Data Standard) -> one `PatientRecord` per subject, or per admission.

Reads `data/*.parquet` and `data/**/*.parquet` (columns subject_id, time, code, numeric_value and,
where present, text_value) through DuckDB, ordered by subject and time in SQL and streamed in Arrow
batches, so a shard set larger than memory is read record by record. `metadata/codes.parquet`
(code, description), when present, names lab items.

Units (`unit=`):
- "subject" (default): one record per subject, id `P{subject_id}`, index time its first timed event
  other than MEDS_BIRTH; every event of the subject belongs to it.
- "admission": one record per `HOSPITAL_ADMISSION//...` event (the convention of the MEDS MIMIC-IV
  ETL), id `H{hadm_id}` where a `hadm_id` column holds one, else `H{subject_id}_{n}` (n-th admission
  of the subject, from 1). The stay runs from that event to the subject's first `HOSPITAL_DISCHARGE//...`
  event at or after it (and not after the next admission), or to the next admission when there is no
  such discharge, or open-ended for the last one. An event belongs to the stay whose window contains
  its time; events outside every stay, and untimed events other than sex, are counted as not placed.

Codes, split on "//" (the first part, the prefix, decides):
| code | becomes |
| --- | --- |
| `LAB//<itemid>//<unit>` | a lab row: itemid, unit, value numeric_value (else text_value), name from codes.parquet |
| `VITALS//<channel>` | a vitals row on that channel (any name `vitals_from_table` knows: "Heart Rate", "HR", ...) |
| `MEASUREMENT//<itemid>[//<unit>]` | a vitals row when the itemid is in the MIMIC-IV map (`resources/mimic4_vitals_itemids.csv`) or the mimic3-benchmarks map; otherwise unknown |
| `NOTE//<category>` | a note: category, text_value as the text |
| `DIAGNOSIS//ICD//9//<code>`, `DIAGNOSIS//ICD//10//<code>` | phenotype labels (`phenotypes.py`; ICD-10 through the CMS GEM, codes it does not map counted) |
| `MEDS_DEATH` | "In-hospital mortality" 1 for the record it falls in (subject mode: any death) |
| `MEDS_BIRTH` | birth time: age at the index time |
| `GENDER//F`, `GENDER//M` | sex |
| `HOSPITAL_ADMISSION//...`, `HOSPITAL_DISCHARGE//...` | stay boundaries (admission mode) |
A `LAB` row of a lab item the MIMIC-IV map takes as a vital (glucose, pH, oxygen saturation) is a
vitals row too, as in the MIMIC readers. Any other code is counted by prefix on `MedsReader.stats`
and reported in one warning, never an error. Phenotype and mortality labels are given only when the
data has any DIAGNOSIS (resp. MEDS_DEATH or admission) code at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from medfuse_core.problems import DataError, Problem, error, warning
from medfuse_core.record import Labs, Note, PatientRecord, Vitals
from medfuse_core.sources import duck
from medfuse_core.sources.duck import RecordRows
from medfuse_core.sources.labs import labs_from_table
from medfuse_core.sources.ehr_reader import RecordReader, empty_table, items_linked_to
from medfuse_core.sources.mimic4 import variable_map
from medfuse_core.sources.phenotypes import (
    MORTALITY,
    PhenotypeDefinitions,
    load_phenotype_definitions,
    match_phenotypes,
)
from medfuse_core.sources.vitals import vitals_from_table

UNITS = ("subject", "admission")
ADMISSION, DISCHARGE = "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE"
STRUCTURAL = {"MEDS_BIRTH", "GENDER", ADMISSION, DISCHARGE}
_EXAMPLES = 10


@cache
def _measurement_channels() -> dict[str, str]:
    """itemid -> channel for MEASUREMENT codes: the MIMIC-IV map, then mimic3-benchmarks' chartevents map."""
    out = dict(items_linked_to("chartevents")["variable"])
    table = variable_map()
    out.update(dict(zip(table["itemid"][table["linksto"] == "chartevents"], table["variable"][table["linksto"] == "chartevents"])))
    return out


@cache
def _lab_channels() -> dict[str, str]:
    table = variable_map()
    rows = table[table["linksto"] == "labevents"]
    return dict(zip(rows["itemid"], rows["variable"]))


@dataclass
class MedsStats:
    """What the MEDS reader found, for the import summary (rows are event rows)."""

    tables: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    rows_unplaced: int = 0  # in no record (admission mode: outside every stay; --limit)
    lab_rows: int = 0
    vital_rows: int = 0
    note_rows: int = 0
    diagnosis_rows: int = 0
    icd10_codes: Counter = field(default_factory=Counter)  # every ICD-10 diagnosis code seen
    icd10_unmapped: Counter = field(default_factory=Counter)  # those the CMS GEM does not map
    unknown_codes: Counter = field(default_factory=Counter)  # ICD-9 in no CCS group
    other_codes: Counter = field(default_factory=Counter)  # prefix -> rows of codes this reader does not use
    other_examples: list[str] = field(default_factory=list)

    def unmapped(self) -> dict[str, object]:
        return {
            "icd10_rows": sum(self.icd10_codes.values()),
            "icd10_examples": [c for c, _ in self.icd10_codes.most_common(_EXAMPLES)],
            "icd10_unmapped_rows": sum(self.icd10_unmapped.values()),
            "icd10_unmapped_examples": [c for c, _ in self.icd10_unmapped.most_common(_EXAMPLES)],
            "unknown_icd9_rows": sum(self.unknown_codes.values()),
            "unknown_icd9_examples": [c for c, _ in self.unknown_codes.most_common(_EXAMPLES)],
            "unknown_code_rows": sum(self.other_codes.values()),
            "unknown_code_prefixes": dict(self.other_codes.most_common(_EXAMPLES)),
        }

    def summary_lines(self) -> list[str]:
        u = self.unmapped()
        return [
            f"event rows: {self.rows} read, {self.rows_unplaced} in no record; labs {self.lab_rows}, "
            f"vitals {self.vital_rows}, notes {self.note_rows}, diagnoses {self.diagnosis_rows}",
            f"diagnoses: ICD-10: {u['icd10_rows']} rows, {u['icd10_unmapped_rows']} not mapped by the CMS GEM; "
            f"ICD-9 in no CCS group: {u['unknown_icd9_rows']}; "
            f"other codes not used: {u['unknown_code_rows']} {u['unknown_code_prefixes'] or ''}",
        ]


class MedsReader(RecordReader):
    """Records of one MEDS dataset folder, in subject and time order."""

    def __init__(self, root: str | Path, unit: str = "subject", limit: int | None = None,
                 memory_limit: str = duck.DEFAULT_MEMORY_LIMIT, *, threads: int | None = None,
                 temp_dir: str | Path | None = None, definitions: PhenotypeDefinitions | None = None,
                 chunk_rows: int = duck.CHUNK_ROWS):
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
        self.root = Path(root)
        self.unit, self.limit, self.chunk_rows = unit, limit, chunk_rows
        self.definitions = definitions or load_phenotype_definitions()
        self.problems: list[Problem] = []
        self.stats = MedsStats()
        data = self.root / "data"
        self.shards = sorted(data.rglob("*.parquet")) if data.is_dir() else []
        if not self.shards:
            raise DataError(str(data), "", "expected MEDS shards data/*.parquet (or data/<split>/*.parquet)")
        self.con = duck.connect(memory_limit, threads, temp_dir)
        self.columns = duck.create_view(self.con, "meds", self.shards, ("subject_id", "time", "code"),
                                        ("numeric_value", "text_value", "hadm_id"), file=str(data),
                                        expected="a MEDS data shard")
        self.stats.tables["data"] = f"{len(self.shards)} shard(s)"
        for optional in ("numeric_value", "text_value"):
            if optional not in self.columns:
                self.problems.append(warning(str(data), optional, "column not found: read as empty"))
        self.item_names = self._item_names()
        self._units: pd.DataFrame | None = None

    # ---- public

    def __iter__(self) -> Iterator[PatientRecord]:
        units = self._unit_table()
        flags = duck.fetch_df(self.con, "SELECT count(*) FILTER (WHERE code LIKE 'DIAGNOSIS//ICD//%') AS dx, "
                              f"count(*) FILTER (WHERE code = 'MEDS_DEATH' OR code LIKE '{ADMISSION}%') AS death, "
                              "count(*) FILTER (WHERE code <> 'MEDS_BIRTH' AND code NOT LIKE 'GENDER//%') AS n "
                              "FROM meds").iloc[0]
        self._has_diagnoses, self._has_death = bool(flags["dx"]), bool(flags["death"])
        self.stats.rows = int(flags["n"])
        rows = RecordRows(duck.stream(self.con, self._events_sql()), None, self.chunk_rows)
        placed = 0
        for position in range(len(units)):
            events = rows.take(position)
            placed += 0 if events is None else len(events)
            yield self._record(position, events)
        self.stats.rows_unplaced = self.stats.rows - placed
        if self.stats.other_codes:
            self.problems.append(warning(str(self.root / "data"), "code", (
                f"{sum(self.stats.other_codes.values())} rows with codes not used, by prefix "
                f"{dict(self.stats.other_codes.most_common(_EXAMPLES))}, e.g. {', '.join(self.stats.other_examples)}")))
        unmapped = sum(self.stats.icd10_unmapped.values())
        if unmapped:
            self.problems.append(warning(str(self.root / "data"), "code", (
                f"{unmapped} of {sum(self.stats.icd10_codes.values())} ICD-10 diagnosis rows not mapped (no CMS GEM "
                f"entry to ICD-9), e.g. {', '.join(c for c, _ in self.stats.icd10_unmapped.most_common(5))}")))

    def records(self) -> list[PatientRecord]:
        return list(self)

    def close(self) -> None:
        self.con.close()

    # ---- units

    def _item_names(self) -> dict[str, str]:
        path = self.root / "metadata" / "codes.parquet"
        if not path.is_file():
            return {}
        try:
            duck.create_view(self.con, "codes", path, ("code",), ("description",))
        except DataError as exc:
            self.problems.append(error(exc.problem.file, exc.problem.field, exc.problem.message + "; lab names left empty"))
            return {}
        names = duck.fetch_df(self.con, "SELECT code, coalesce(CAST(description AS VARCHAR), '') AS description "
                              "FROM codes WHERE code LIKE 'LAB//%'")
        return {c.split("//")[1]: d for c, d in zip(names["code"], names["description"]) if d and c.count("//") >= 1}

    def _unit_table(self) -> pd.DataFrame:
        if self._units is not None:
            return self._units
        demographics = ("SELECT subject_id, min(time) FILTER (WHERE code = 'MEDS_BIRTH') AS birth, "
                        "any_value(split_part(code, '//', 2)) FILTER (WHERE code LIKE 'GENDER//%') AS gender, "
                        "min(time) FILTER (WHERE code <> 'MEDS_BIRTH' AND time IS NOT NULL) AS first_time "
                        "FROM meds GROUP BY subject_id")
        if self.unit == "subject":
            sql = (f"SELECT 'P' || CAST(subject_id AS VARCHAR) AS record_id, subject_id, first_time AS index_time, "
                   f"NULL::TIMESTAMP AS window_start, NULL::TIMESTAMP AS window_end, birth, gender FROM ({demographics})")
        else:
            hadm = "CAST(hadm_id AS VARCHAR)" if "hadm_id" in self.columns else "NULL"
            sql = f"""
                WITH adm AS (
                    SELECT subject_id, time AS window_start, {hadm} AS hadm_id,
                           row_number() OVER (PARTITION BY subject_id ORDER BY time) AS n,
                           lead(time) OVER (PARTITION BY subject_id ORDER BY time) AS next_start
                    FROM meds WHERE (code = '{ADMISSION}' OR code LIKE '{ADMISSION}//%') AND time IS NOT NULL),
                dis AS (SELECT subject_id, time FROM meds WHERE code = '{DISCHARGE}' OR code LIKE '{DISCHARGE}//%')
                SELECT 'H' || coalesce(a.hadm_id, CAST(a.subject_id AS VARCHAR) || '_' || CAST(a.n AS VARCHAR)) AS record_id,
                       a.subject_id, a.window_start AS index_time, a.window_start,
                       coalesce((SELECT min(d.time) FROM dis d WHERE d.subject_id = a.subject_id
                                 AND d.time >= a.window_start AND (a.next_start IS NULL OR d.time <= a.next_start)),
                                a.next_start) AS window_end, p.birth, p.gender
                FROM adm a LEFT JOIN ({demographics}) p ON a.subject_id = p.subject_id"""
        units = duck.fetch_df(self.con, sql).sort_values(["subject_id", "index_time", "record_id"], kind="stable")
        if self.limit is not None:
            units = units.head(max(int(self.limit), 0))
        units = units.reset_index(drop=True)
        units["position"] = np.arange(len(units), dtype=np.int64)
        self.con.register("_units_frame", units[["position", "subject_id", "window_start", "window_end"]])
        self.con.execute("CREATE OR REPLACE TABLE units AS SELECT * FROM _units_frame")
        self.con.unregister("_units_frame")
        self._units = units
        return units

    def _events_sql(self) -> str:
        numeric = "CAST(e.numeric_value AS DOUBLE)" if "numeric_value" in self.columns else "NULL::DOUBLE"
        text = "coalesce(CAST(e.text_value AS VARCHAR), '')" if "text_value" in self.columns else "''"
        select = (f"u.position, e.time, coalesce(strftime(e.time, '%Y-%m-%d %H:%M:%S'), '') AS time_text, e.code, "
                  f"{numeric} AS numeric_value, {text} AS text_value")
        skip = "e.code NOT IN ('MEDS_BIRTH') AND e.code NOT LIKE 'GENDER//%'"
        if self.unit == "subject":
            return (f"SELECT {select} FROM meds e JOIN units u ON e.subject_id = u.subject_id WHERE {skip} "
                    "ORDER BY u.position, e.time NULLS FIRST, e.code")
        return (f"SELECT {select} FROM meds e ASOF JOIN units u ON e.subject_id = u.subject_id "
                f"AND e.time >= u.window_start WHERE {skip} AND (u.window_end IS NULL OR e.time <= u.window_end) "
                "ORDER BY u.position, e.time, e.code")

    # ---- one record

    def _record(self, position: int, events: pd.DataFrame | None) -> PatientRecord:
        unit = self._units.iloc[position]
        record_id = str(unit["record_id"])
        where = f"{self.root}: {record_id}"
        problems: list[Problem] = []
        index_time = pd.Timestamp(unit["index_time"]) if pd.notna(unit["index_time"]) else None
        sex = str(unit["gender"]).strip().upper() if isinstance(unit["gender"], str) else ""
        age = None
        if pd.notna(unit["birth"]) and index_time is not None:
            age = round((index_time - pd.Timestamp(unit["birth"])) / pd.Timedelta(days=365.25), 2)
        record = PatientRecord(patient_id=record_id, age=age, sex=sex if sex in ("F", "M") else None,
                               index_time=index_time, problems=problems, source=where)
        if events is None:
            events = pd.DataFrame({c: pd.Series(dtype=object) for c in ("time", "time_text", "code", "numeric_value",
                                                                           "text_value")})
        parts = events["code"].astype(str).str.split("//")
        prefix = parts.str[0]
        value = events["numeric_value"].map(lambda v: "" if pd.isna(v) else f"{v:.6g}")
        value = value.where(value != "", events["text_value"])
        labels: dict[str, int] = {}
        record.labs, lab_vitals = self._labs(events[prefix == "LAB"], parts[prefix == "LAB"], value, where, problems)
        record.vitals = self._vitals(events, prefix, parts, value, lab_vitals, where, problems)
        record.notes = [Note(time=pd.Timestamp(t) if pd.notna(t) else None, category="//".join(p[1:]), text=x,
                             source=str(self.root / "data"))
                        for t, p, x in zip(events["time"][prefix == "NOTE"], parts[prefix == "NOTE"],
                                           events["text_value"][prefix == "NOTE"])]
        self.stats.note_rows += len(record.notes)
        if self._has_diagnoses:
            labels.update(self._phenotypes(parts[prefix == "DIAGNOSIS"]))
        if self._has_death:
            labels[MORTALITY] = int(bool((events["code"] == "MEDS_DEATH").any()))
        record.labels = labels or None
        used = prefix.isin({"LAB", "VITALS", "NOTE", "DIAGNOSIS", "MEDS_DEATH", *STRUCTURAL}) | (prefix == "MEASUREMENT")
        unknown_measurement = (prefix == "MEASUREMENT") & ~parts.str[1].isin(set(_measurement_channels()))
        other = events["code"][~used | unknown_measurement]
        if len(other):
            self.stats.other_codes.update(other.astype(str).str.split("//").str[0])
            for code in other:
                if len(self.stats.other_examples) < _EXAMPLES and code not in self.stats.other_examples:
                    self.stats.other_examples.append(code)
        return record

    def _labs(self, events: pd.DataFrame, parts: pd.Series, value: pd.Series, where: str,
              problems: list[Problem]) -> tuple[Labs, pd.DataFrame]:
        if not len(events):
            return Labs(empty_table(Labs).copy()), pd.DataFrame(columns=["time", "channel", "value"])
        itemid = parts.str[1].fillna("")
        raw = pd.DataFrame({"time": events["time_text"], "itemid": itemid, "item": itemid.map(lambda i: self.item_names.get(i, "")),
                            "value": value[events.index], "unit": parts.map(lambda p: "//".join(p[2:]))})
        labs, found = labs_from_table(raw.reset_index(drop=True), f"{self.root / 'data'} ({where})")
        problems.extend(found)
        self.stats.lab_rows += len(labs.table)
        channels = itemid.map(_lab_channels())
        numeric = events["numeric_value"].notna() & channels.notna()
        lab_vitals = pd.DataFrame({"time": events["time_text"][numeric], "channel": channels[numeric],
                                   "value": value[events.index][numeric]})
        return labs, lab_vitals

    def _vitals(self, events, prefix, parts, value, lab_vitals, where, problems) -> Vitals:
        named = prefix == "VITALS"
        measured = (prefix == "MEASUREMENT") & parts.str[1].isin(set(_measurement_channels()))
        channel = pd.concat([parts[named].map(lambda p: "//".join(p[1:])), parts[measured].str[1].map(_measurement_channels())])
        rows = events.index[named | measured]
        raw = pd.concat([pd.DataFrame({"time": events["time_text"][rows], "channel": channel[rows], "value": value[rows]}),
                         lab_vitals], ignore_index=True)
        if not len(raw):
            return Vitals(empty_table(Vitals).copy())
        vitals, found = vitals_from_table(raw, f"{self.root / 'data'} ({where})")
        problems.extend(found)
        self.stats.vital_rows += len(vitals.table)
        return vitals

    def _phenotypes(self, parts: pd.Series) -> dict[str, int]:
        icd = parts[parts.str[1] == "ICD"]
        self.stats.diagnosis_rows += len(icd)
        versions = icd.str[2].fillna("")
        codes = icd.map(lambda p: "//".join(p[3:]))
        match = match_phenotypes(codes, versions, self.definitions, map_icd10=True)
        self.stats.icd10_codes.update(match.icd10)
        self.stats.icd10_unmapped.update(match.icd10_unmapped)
        self.stats.unknown_codes.update(match.unknown)
        return match.labels


__all__ = ["MedsReader", "MedsStats"]
