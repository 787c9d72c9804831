"""MIMIC-IV (+ MIMIC-IV-Note, MIMIC-CXR-JPG) tables -> one `PatientRecord` per admission or ICU stay.

The counterpart of `mimic3.py` for the official MIMIC-IV layout, read through DuckDB (`duck.py`) so
that the 300-million-row `icu/chartevents` never sits in memory: every event table is scanned once
with projection and filter pushdown, joined to the records read, ordered by (record, time) in SQL,
and streamed in Arrow batches; a record is built when all its rows have arrived. Memory is bounded
by DuckDB's `memory_limit` (sorts spill to a temp directory) plus one chunk of rows per modality.

Tables are found by name ignoring case and extension (.csv, .csv.gz, .parquet) anywhere up to three
folders down, so `hosp/labevents.csv.gz`, `icu/chartevents.parquet`, `note/discharge.csv.gz` and
`mimic-cxr-2.0.0-metadata.csv.gz` are found under one root.

- Unit: `unit="admission"` (id `H{hadm_id}`, index time admittime, window [admittime, dischtime]) or
  `unit="icustay"` (id `S{stay_id}`, index time intime, window [intime, outtime]). In ICU-stay mode
  chartevents rows go to their stay_id; rows without one, and lab rows, go as in `mimic3.py` to the
  last stay of the admission whose intime is at or before them (rows before the first stay to the
  first). Records are ordered by subject, index time, id; `limit` keeps the first N.
- Demographics from hosp/patients: sex from gender, age = anchor_age + (year of index - anchor_year).
  MIMIC-IV gives patients older than 89 an anchor_age of 91: such ages are set to 90, with a warning.
- Labs from hosp/labevents joined by hadm_id (rows without one are outpatient: counted, not imported),
  names from d_labitems.label, value text (else valuenum), valueuom, ref_range_lower/upper, flag,
  parsed by `labs_from_table` (text kept).
- Vitals on the 17 mimic3-benchmarks channels through `resources/mimic4_vitals_itemids.csv`, a map of
  our own (mimic3-benchmarks has none for MIMIC-IV; labels as in MIMIC-IV d_items / d_labitems):
  chartevents items, plus the lab items the benchmark also takes from labevents (glucose 50931/50809,
  pH 50820, oxygen saturation 50817; plain numbers only, as its `clean_lab`). Parsed by
  `vitals_from_table` (unit cleaning, categorical maps, outliers). MIMIC-IV capillary refill text
  ("Normal <3 Seconds") is mapped to the benchmark's ("Normal <3 secs"). If d_items is present, a label
  there that differs from the map's is reported (the map may be stale for that release).
- Notes from note/discharge ("Discharge summary") and note/radiology ("Radiology") by hadm_id.
- Images from MIMIC-CXR-JPG `mimic-cxr-2.0.0-metadata`: each image's study time (StudyDate +
  StudyTime) is linked to the record of the same subject whose window contains it (the first such
  record if windows overlap). Pixels are read with `load_image` only when the record is produced;
  files are looked up at `<cxr_root>/files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg`
  (or `.dcm`), `cxr_root` defaulting to the folder of the metadata file. A missing or unreadable image
  file is a warning on the record.
- Labels: the 25 benchmark phenotypes from diagnoses_icd (`phenotypes.py`): ICD-9 rows directly,
  ICD-10 rows through the CMS ICD-10-CM -> ICD-9-CM GEM (`icd10_gem.py`); ICD-10 codes the GEM does
  not map are counted and reported (the MIMIC-IV demo: 17 of 2,313 ICD-10 rows, codes newer than the
  2018 GEM). "In-hospital mortality" from admissions.hospital_expire_flag.

As in `mimic3.py`: a missing optional table means the modality (or label set) is absent, with one
warning on `Mimic4Reader.problems`; an optional table without a column it needs is an error problem
there and is left out; admissions (and icustays in ICU-stay mode) are required, and a missing table or
column raises `DataError` naming file and column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from medfuse_core.problems import DataError, Problem, error, warning
from medfuse_core.record import ChestImage, Labs, Note, PatientRecord, Vitals
from medfuse_core.sources import duck
from medfuse_core.sources.duck import RecordRows
from medfuse_core.sources.icd10_gem import GEM_SOURCE, icd10_to_ccs
from medfuse_core.sources.images import load_image
from medfuse_core.sources.labs import labs_from_table
from medfuse_core.sources.ehr_reader import LAB_KEYS, MAX_AGE, VITAL_KEYS, ReaderStats, RecordReader, align_rows, empty_table
from medfuse_core.sources.phenotypes import (
    MORTALITY,
    PhenotypeDefinitions,
    load_phenotype_definitions,
    looks_like_icd10,
    match_phenotypes,
)
from medfuse_core.sources.vitals import vitals_from_table

UNITS = ("admission", "icustay")
VARIABLE_MAP_FILE = "mimic4_vitals_itemids.csv"
CXR_METADATA = "mimic-cxr-2.0.0-metadata"
CHUNK_ROWS = duck.CHUNK_ROWS
OLDEST_ANCHOR_AGE = 89  # MIMIC-IV: anchor_age 91 stands for "older than 89"
NOTE_TABLES = {"discharge": "Discharge summary", "radiology": "Radiology"}
IMAGE_SUFFIXES = (".jpg", ".dcm")
_EXAMPLES = 10

# table -> (columns that must be there, columns used when there)
_SCHEMA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "admissions": (("subject_id", "hadm_id", "admittime"), ("dischtime", "hospital_expire_flag")),
    "patients": (("subject_id",), ("gender", "anchor_age", "anchor_year")),
    "icustays": (("subject_id", "hadm_id", "stay_id", "intime"), ("outtime",)),
    "labevents": (("hadm_id", "itemid", "charttime", "value"),
                  ("labevent_id", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag")),
    "d_labitems": (("itemid", "label"), ()),
    "d_items": (("itemid", "label"), ()),
    "diagnoses_icd": (("hadm_id", "icd_code"), ("icd_version",)),
    "chartevents": (("hadm_id", "itemid", "charttime", "value"), ("stay_id", "valuenum", "valueuom")),
    "discharge": (("hadm_id", "text"), ("charttime",)),
    "radiology": (("hadm_id", "text"), ("charttime",)),
    CXR_METADATA: (("subject_id", "study_id", "dicom_id"), ("viewposition", "studydate", "studytime")),
}
_OPTIONAL_TABLES = {
    "patients": "no age or sex",
    "labevents": "no labs (and no glucose / pH / oxygen saturation vitals from labs)",
    "d_labitems": "lab names left empty (item ids kept)",
    "diagnoses_icd": "no phenotype labels",
    "chartevents": "no bedside vitals",
    "discharge": "no discharge summaries",
    "radiology": "no radiology reports",
    CXR_METADATA: "no chest X-rays",
}
_CRR = (re.compile(r"^\s*normal\s*<\s*3", re.I), "Normal <3 secs"), (re.compile(r"^\s*abnormal\s*>\s*3", re.I),
                                                                      "Abnormal >3 secs")


def _id(column: str) -> str:
    """SQL: an id column as clean text ("193924", "193924.0", 193924 -> '193924'; '' when missing)."""
    return f"coalesce(regexp_replace(trim(CAST({column} AS VARCHAR)), '\\.0+$', ''), '')"


def _text(column: str, present: bool) -> str:
    return f"coalesce(trim(CAST({column} AS VARCHAR)), '')" if present else "''"


def _time(column: str) -> str:
    return f"TRY_CAST({column} AS TIMESTAMP)"


@cache
def variable_map() -> pd.DataFrame:
    """Our MIMIC-IV itemid -> mimic3-benchmarks channel map: variable, itemid, label, linksto, unitname."""
    text = resources.files("medfuse_core.resources").joinpath(VARIABLE_MAP_FILE).read_text(encoding="utf-8")
    table = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    return table.rename(columns={"LEVEL2": "variable", "ITEMID": "itemid", "MIMIC LABEL": "label",
                                 "LINKSTO": "linksto", "UNITNAME": "unitname", "SOURCE": "source"})


def _items_sql(linksto: str) -> str:
    """SQL VALUES list (itemid, variable) of the map's items of one table."""
    rows = variable_map()[variable_map()["linksto"] == linksto]
    return ", ".join(f"({int(i)}, '{v.replace(chr(39), chr(39) * 2)}')" for i, v in zip(rows["itemid"],
                                                                                         rows["variable"]))


# ------------------------------------------------------------------------------------- streaming


def _empty() -> Iterator[pd.DataFrame]:
    return iter(())


# ----------------------------------------------------------------------------------------- stats


@dataclass
class Mimic4Stats(ReaderStats):
    """ReaderStats plus counted (not listed) unmapped codes and the chest X-ray linkage."""

    icd10_rows: int = 0  # ICD-10 diagnosis rows, mapped or not
    icd10_top: list[str] = field(default_factory=list)
    icd10_unmapped_rows: int = 0  # ICD-10 rows whose code the GEM does not map
    icd10_unmapped_top: list[str] = field(default_factory=list)
    unknown_icd9_rows: int = 0
    unknown_icd9_top: list[str] = field(default_factory=list)
    image_rows: int = 0  # rows of the CXR metadata
    image_rows_linked: int = 0  # linked to a record read
    images_missing: int = 0  # linked, but no image file found (or unreadable)
    label_mismatches: list[str] = field(default_factory=list)  # map items whose d_items label differs

    def unmapped(self) -> dict[str, object]:
        return {
            "icd10_rows": self.icd10_rows,
            "icd10_examples": self.icd10_top,
            "icd10_mapped_rows": self.icd10_rows - self.icd10_unmapped_rows,
            "icd10_unmapped_rows": self.icd10_unmapped_rows,
            "icd10_unmapped_examples": self.icd10_unmapped_top,
            "icd10_mapping": GEM_SOURCE,
            "unknown_icd9_rows": self.unknown_icd9_rows,
            "unknown_icd9_examples": self.unknown_icd9_top,
        }


# ----------------------------------------------------------------------------------------- reader


class Mimic4Reader(RecordReader):
    """Records of one MIMIC-IV folder, one per admission or ICU stay, in subject and time order.

    The record index is read on first use; event tables are streamed during iteration. `problems`
    holds reader-level problems (missing tables, rows that could not be placed), each record its own.
    """

    def __init__(
        self,
        root: str | Path,
        unit: str = "admission",
        limit: int | None = None,
        memory_limit: str = duck.DEFAULT_MEMORY_LIMIT,
        *,
        threads: int | None = None,
        temp_dir: str | Path | None = None,
        cxr_root: str | Path | None = None,
        definitions: PhenotypeDefinitions | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ):
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(str(self.root), "", "expected a folder of MIMIC-IV tables (hosp/admissions.csv.gz, ...)")
        self.unit = unit
        self.limit = limit
        self.memory_limit = memory_limit
        self.definitions = definitions or load_phenotype_definitions()
        self.chunk_rows = chunk_rows
        self.problems: list[Problem] = []
        self.stats = Mimic4Stats()
        self.con = duck.connect(memory_limit, threads, temp_dir)
        self.files, duplicates = duck.find_table_files(self.root)
        for name, used, ignored in duplicates:
            if name in _SCHEMA:
                self.problems.append(warning(str(ignored), "", f"another file holds table {name}: {used} is used"))
        metadata = self.files.get(CXR_METADATA)
        self.cxr_root = Path(cxr_root) if cxr_root is not None else (metadata.parent if metadata else None)
        self.columns: dict[str, set[str]] = {}  # table -> its columns, for tables with a view
        self._units: pd.DataFrame | None = None
        self._prepared = False

    # ---- public

    @property
    def index(self) -> pd.DataFrame:
        """One row per record, in iteration order: record_id, subject_id, hadm_id, stay_id, index_time."""
        return self._unit_table()[["record_id", "subject_id", "hadm_id", "stay_id", "index_time"]].copy()

    def __iter__(self) -> Iterator[PatientRecord]:
        self._unit_table()
        self._prepare()
        streams = {
            "labs": self._lab_stream(), "vitals": self._vital_stream(), "notes": self._note_stream(),
            "diagnoses": self._diagnosis_stream(), "images": self._image_stream(),
        }
        for position in range(len(self._units)):
            yield self._record(position, {name: s.take(position) for name, s in streams.items()})

    def records(self) -> list[PatientRecord]:
        return list(self)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Mimic4Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- tables

    def _file(self, table: str) -> str:
        path = self.files.get(table)
        return str(path) if path else table

    def _view(self, table: str) -> bool:
        """Create the view of `table`; False when it is absent. DataError when it lacks a column."""
        if table in self.columns:
            return True
        path = self.files.get(table)
        if path is None:
            return False
        required, wanted = _SCHEMA[table]
        self.columns[table] = duck.create_view(self.con, table, path, required, wanted, expected=table)
        return True

    def _optional(self, table: str) -> bool:
        """Create the view of an optional table; False (with an error problem) when it lacks a column."""
        try:
            return self._view(table)
        except DataError as exc:
            self.problems.append(error(exc.problem.file, exc.problem.field, exc.problem.message + "; table left out"))
            return False

    def _has(self, table: str, column: str) -> bool:
        return column in self.columns.get(table, ())

    # ---- units

    def _unit_table(self) -> pd.DataFrame:
        if self._units is not None:
            return self._units
        for table in ("admissions", *_OPTIONAL_TABLES, *(("icustays",) if self.unit == "icustay" else ())):
            path = self.files.get(table)
            self.stats.tables[table] = path.name if path else ""
            if path is None and table in _OPTIONAL_TABLES:
                self.problems.append(warning(str(self.root), table, f"table not found: {_OPTIONAL_TABLES[table]}"))
        for table in ("admissions", *(("icustays",) if self.unit == "icustay" else ())):
            if not self._view(table):
                raise DataError(str(self.root), table, f"expected a {table}.csv.gz (or .csv, .parquet) table "
                                "in the folder or its hosp/ and icu/ subfolders")
        if not self._has("admissions", "hospital_expire_flag"):
            self.problems.append(warning(self._file("admissions"), "hospital_expire_flag",
                                         "column not found: no in-hospital mortality label"))
        flag = _text("a.hospital_expire_flag", self._has("admissions", "hospital_expire_flag"))
        dischtime = _time("a.dischtime") if self._has("admissions", "dischtime") else "NULL::TIMESTAMP"
        admissions = (f"SELECT {_id('a.subject_id')} AS subject_id, {_id('a.hadm_id')} AS hadm_id, "
                      f"{_time('a.admittime')} AS admittime, {dischtime} AS dischtime, {flag} AS hospital_expire_flag "
                      "FROM admissions a")
        if self.unit == "admission":
            sql = (f"SELECT 'H' || hadm_id AS record_id, subject_id, hadm_id, '' AS stay_id, admittime AS index_time, "
                   f"admittime AS window_start, dischtime AS window_end, hospital_expire_flag, true AS has_admission "
                   f"FROM ({admissions})")
        else:
            outtime = _time("s.outtime") if self._has("icustays", "outtime") else "NULL::TIMESTAMP"
            sql = (f"SELECT 'S' || {_id('s.stay_id')} AS record_id, {_id('s.subject_id')} AS subject_id, "
                   f"{_id('s.hadm_id')} AS hadm_id, {_id('s.stay_id')} AS stay_id, {_time('s.intime')} AS index_time, "
                   f"{_time('s.intime')} AS window_start, {outtime} AS window_end, "
                   f"coalesce(a.hospital_expire_flag, '') AS hospital_expire_flag, a.hadm_id IS NOT NULL AS has_admission "
                   f"FROM icustays s LEFT JOIN ({admissions}) a ON {_id('s.hadm_id')} = a.hadm_id")
        units = duck.fetch_df(self.con, sql)
        if self.unit == "icustay" and not units["has_admission"].all():
            orphans = ~units["has_admission"]
            message = (f"{int(orphans.sum())} ICU stays of no admission in admissions, e.g. stay_id "
                       f"{units['stay_id'][orphans].iloc[0]}; read without admission data")
            self.problems.append(warning(self._file("icustays"), "hadm_id", message))
        units["_subject"] = pd.to_numeric(units["subject_id"], errors="coerce")
        units = units.sort_values(["_subject", "subject_id", "index_time", "record_id"], kind="stable")
        units = units.drop(columns=["_subject", "has_admission"]).reset_index(drop=True)
        if self.limit is not None:
            units = units.head(max(int(self.limit), 0)).reset_index(drop=True)
        units["position"] = np.arange(len(units), dtype=np.int64)
        units = self._add_demographics(units)
        self.con.register("_units_frame", units[["position", "subject_id", "hadm_id", "stay_id", "window_start",
                                                  "window_end"]])
        self.con.execute("CREATE OR REPLACE TABLE units AS SELECT * FROM _units_frame")
        self.con.unregister("_units_frame")
        self._units = units
        return units

    def _add_demographics(self, units: pd.DataFrame) -> pd.DataFrame:
        units["gender"], units["anchor_age"], units["anchor_year"], units["has_patient"] = "", np.nan, np.nan, False
        if not self._optional("patients"):
            return units
        self.con.register("_subjects", pd.DataFrame({"subject_id": units["subject_id"].unique()}))
        sql = (f"SELECT {_id('p.subject_id')} AS subject_id, any_value({_text('p.gender', self._has('patients', 'gender'))}) "
               f"AS gender, any_value(TRY_CAST({'p.anchor_age' if self._has('patients', 'anchor_age') else 'NULL'} AS DOUBLE)) "
               f"AS anchor_age, any_value(TRY_CAST({'p.anchor_year' if self._has('patients', 'anchor_year') else 'NULL'} "
               f"AS DOUBLE)) AS anchor_year FROM patients p SEMI JOIN _subjects s ON {_id('p.subject_id')} = s.subject_id "
               "GROUP BY 1")
        patients = duck.fetch_df(self.con, sql).set_index("subject_id")
        self.con.unregister("_subjects")
        units = units.drop(columns=["gender", "anchor_age", "anchor_year", "has_patient"])
        units = units.join(patients, on="subject_id")
        units["has_patient"] = units["subject_id"].isin(patients.index)
        units["gender"] = units["gender"].fillna("").astype(object)
        return units

    # ---- event placement (SQL)

    def _placed(self, events: str, by_stay: bool = False) -> str:
        """SQL adding `position` to `events` (columns hadm_id, t[, stay_id]); rows of no record dropped."""
        if self.unit == "admission":
            return (f"SELECT e.*, u.position FROM ({events}) e JOIN "
                    "(SELECT hadm_id, min(position) AS position FROM units GROUP BY hadm_id) u ON e.hadm_id = u.hadm_id")
        stay_join = ("LEFT JOIN (SELECT stay_id, min(position) AS position FROM units GROUP BY stay_id) bs "
                     "ON e.stay_id = bs.stay_id") if by_stay else ""
        by_stay_position = "bs.position, " if by_stay else ""
        return (
            f"SELECT e.* EXCLUDE (_asof_position), coalesce({by_stay_position}e._asof_position, f.position) AS position "
            f"FROM (SELECT e.*, s.position AS _asof_position FROM ({events}) e "
            "ASOF LEFT JOIN (SELECT hadm_id, window_start, position FROM units WHERE window_start IS NOT NULL) s "
            "ON e.hadm_id = s.hadm_id AND e.t >= s.window_start) e "
            f"{stay_join} "
            "LEFT JOIN (SELECT hadm_id, arg_min(position, window_start) AS position FROM units GROUP BY hadm_id) f "
            "ON e.hadm_id = f.hadm_id "
            f"WHERE coalesce({by_stay_position}f.position) IS NOT NULL"
        )

    def _stream(self, sql: str, parse: Callable | None = None) -> RecordRows:
        return RecordRows(duck.stream(self.con, sql), parse, self.chunk_rows)

    # ---- preparation: views, counts

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._prepared = True
        for table in _OPTIONAL_TABLES:
            if table != "patients":
                self._optional(table)
        if "labevents" in self.columns:
            self._count_labs()
        if "diagnoses_icd" in self.columns:
            self._count_diagnoses()
        if CXR_METADATA in self.columns:
            self._count_images()
        if self._optional("d_items"):
            self._check_item_labels()

    def _count_labs(self) -> None:
        sql = (f"SELECT count(*), count(*) FILTER (WHERE h = ''), "
               "count(*) FILTER (WHERE h <> '' AND h NOT IN (SELECT hadm_id FROM units)) "
               f"FROM (SELECT {_id('hadm_id')} AS h FROM labevents)")
        total, without, unplaced = duck.fetch_df(self.con, sql).iloc[0].tolist()
        self.stats.lab_rows, self.stats.lab_rows_without_stay = int(total), int(without)
        self.stats.lab_rows_unplaced = int(unplaced)
        if unplaced:
            self.problems.append(warning(self._file("labevents"), "hadm_id", f"{int(unplaced)} lab rows with a hadm_id "
                                         "of no record read; not imported"))

    def _count_diagnoses(self) -> None:
        """Diagnosis rows of the records read; ICD-10 and unknown ICD-9 rows counted per code, in SQL."""
        version = _text("icd_version", self._has("diagnoses_icd", "icd_version"))
        sql = (f"SELECT upper(replace(trim(CAST(icd_code AS VARCHAR)), '.', '')) AS code, {version} AS version, "
               "count(*) AS n FROM diagnoses_icd "
               f"WHERE {_id('hadm_id')} IN (SELECT hadm_id FROM units) AND coalesce(trim(CAST(icd_code AS VARCHAR)), '') <> '' "
               "GROUP BY 1, 2")
        counts = duck.fetch_df(self.con, sql)
        self.stats.diagnosis_rows = int(counts["n"].sum())
        versions = counts["version"].astype(str)
        icd10 = versions.str.startswith("10") | (~versions.str.startswith("9") & counts["code"].map(looks_like_icd10))
        unknown = ~icd10 & ~counts["code"].isin(set(self.definitions.code_to_group))
        unmapped = icd10 & counts["code"].map(lambda c: icd10_to_ccs(c, self.definitions.code_to_group) is None)
        for rows, count_attr, top_attr in ((counts[icd10], "icd10_rows", "icd10_top"),
                                           (counts[unmapped], "icd10_unmapped_rows", "icd10_unmapped_top"),
                                           (counts[unknown], "unknown_icd9_rows", "unknown_icd9_top")):
            per_code = rows.groupby("code")["n"].sum().sort_index()
            setattr(self.stats, count_attr, int(per_code.sum()))
            setattr(self.stats, top_attr, list(per_code.sort_values(ascending=False, kind="stable").index[:_EXAMPLES]))
        if self.stats.icd10_unmapped_rows:
            message = (f"{self.stats.icd10_unmapped_rows} of {self.stats.icd10_rows} ICD-10 diagnosis rows not mapped "
                       f"(no CMS GEM entry to ICD-9), e.g. {', '.join(self.stats.icd10_unmapped_top[:5])}")
            self.problems.append(warning(self._file("diagnoses_icd"), "icd_code", message))

    def _image_sql(self) -> str:
        has = lambda c: self._has(CXR_METADATA, c)  # noqa: E731
        date = _text("m.studydate", has("studydate"))
        clock = f"split_part({_text('m.studytime', has('studytime'))}, '.', 1)"
        return (f"SELECT {_id('m.subject_id')} AS subject_id, {_id('m.study_id')} AS study_id, "
                f"{_text('m.dicom_id', True)} AS dicom_id, {_text('m.viewposition', has('viewposition'))} AS view, "
                f"coalesce(try_strptime({date} || lpad(CASE WHEN {clock} = '' THEN '0' ELSE {clock} END, 6, '0'), "
                f"'%Y%m%d%H%M%S'), try_strptime({date}, '%Y%m%d')) AS t FROM \"{CXR_METADATA}\" m")

    def _linked_images_sql(self) -> str:
        return (f"SELECT i.*, min(u.position) AS position FROM ({self._image_sql()}) i JOIN units u "
                "ON i.subject_id = u.subject_id AND i.t >= u.window_start AND (u.window_end IS NULL OR i.t <= u.window_end) "
                "GROUP BY ALL")

    def _count_images(self) -> None:
        total = duck.fetch_df(self.con, f'SELECT count(*) AS n FROM "{CXR_METADATA}"')["n"].iloc[0]
        linked = duck.fetch_df(self.con, f"SELECT count(*) AS n FROM ({self._linked_images_sql()})")["n"].iloc[0]
        self.stats.image_rows, self.stats.image_rows_linked = int(total), int(linked)

    def _check_item_labels(self) -> None:
        chart = variable_map()[variable_map()["linksto"] == "chartevents"]
        items = duck.fetch_df(self.con, f"SELECT {_id('itemid')} AS itemid, {_text('label', True)} AS label FROM d_items "
                              f"WHERE {_id('itemid')} IN ({', '.join(repr(i) for i in chart['itemid'])})")
        found = dict(zip(items["itemid"], items["label"]))
        for itemid, label in zip(chart["itemid"], chart["label"]):
            if itemid in found and found[itemid].casefold() != label.casefold():
                self.stats.label_mismatches.append(itemid)
                self.problems.append(warning(self._file("d_items"), "label", f"itemid {itemid} is {found[itemid]!r} "
                                             f"here; the MIMIC-IV vitals map expects {label!r}"))

    # ---- streams

    def _lab_stream(self) -> RecordRows:
        if "labevents" not in self.columns:
            return RecordRows(_empty())
        has = lambda c: self._has("labevents", c)  # noqa: E731
        value = _text("l.value", True)
        if has("valuenum"):
            value = f"CASE WHEN {value} = '' THEN {_text('l.valuenum', True)} ELSE {value} END"
        names = ("LEFT JOIN (SELECT " + _id("itemid") + " AS itemid, any_value(" + _text("label", True) + ") AS item "
                 "FROM d_labitems GROUP BY 1) d ON " + _id("l.itemid") + " = d.itemid") if "d_labitems" in self.columns else ""
        item = "coalesce(d.item, '')" if names else "''"
        order = "TRY_CAST(l.labevent_id AS BIGINT)" if has("labevent_id") else "NULL::BIGINT"
        events = (f"SELECT {_id('l.hadm_id')} AS hadm_id, {_time('l.charttime')} AS t, "
                  f"{_text('l.charttime', True)} AS time, {_id('l.itemid')} AS itemid, {item} AS item, {value} AS value, "
                  f"{_text('l.valueuom', has('valueuom'))} AS unit, {_text('l.ref_range_lower', has('ref_range_lower'))} "
                  f"AS ref_low, {_text('l.ref_range_upper', has('ref_range_upper'))} AS ref_high, "
                  f"{_text('l.flag', has('flag'))} AS flag, {order} AS row_order FROM labevents l {names} WHERE {_id('l.hadm_id')} <> ''")
        sql = (f"SELECT position, time, itemid, item, value, unit, ref_low, ref_high, flag FROM ({self._placed(events)}) "
               "ORDER BY position, t, row_order, itemid, value")
        return self._stream(sql, self._parser(labs_from_table, self._file("labevents"), LAB_KEYS, "lab_rows_placed"))

    def _vital_stream(self) -> RecordRows:
        parts = []
        if "chartevents" in self.columns:
            has_stay = self._has("chartevents", "stay_id")
            value = _text("c.value", True)
            if self._has("chartevents", "valuenum"):
                value = f"CASE WHEN {value} = '' THEN {_text('c.valuenum', True)} ELSE {value} END"
            stay = f", {_id('c.stay_id')} AS stay_id" if has_stay else ""
            events = (f"SELECT {_id('c.hadm_id')} AS hadm_id, {_time('c.charttime')} AS t, {_text('c.charttime', True)} "
                      f"AS time, m.variable AS channel, {value} AS value{stay}, 'chart' AS origin FROM chartevents c "
                      f"JOIN (VALUES {_items_sql('chartevents')}) m(itemid, variable) "
                      f"ON TRY_CAST(c.itemid AS BIGINT) = m.itemid")
            placed = self._placed(events, by_stay=has_stay)
            parts.append(f"SELECT position, t, time, channel, value, origin FROM ({placed})")
        if "labevents" in self.columns:
            events = (f"SELECT {_id('l.hadm_id')} AS hadm_id, {_time('l.charttime')} AS t, {_text('l.charttime', True)} "
                      f"AS time, m.variable AS channel, trim(CAST(l.value AS VARCHAR)) AS value, 'lab' AS origin "
                      f"FROM labevents l JOIN (VALUES {_items_sql('labevents')}) m(itemid, variable) "
                      f"ON TRY_CAST(l.itemid AS BIGINT) = m.itemid "
                      "WHERE regexp_full_match(trim(CAST(l.value AS VARCHAR)), '^(\\d+(\\.\\d*)?|\\.\\d+)$')")
            parts.append(f"SELECT position, t, time, channel, value, origin FROM ({self._placed(events)})")
        if not parts:
            return RecordRows(_empty())
        sql = f"SELECT position, time, channel, value, origin FROM ({' UNION ALL '.join(parts)}) ORDER BY position, t, origin, channel, value"
        files = " and ".join(self._file(t) for t in ("chartevents", "labevents") if t in self.columns)
        parse = self._parser(vitals_from_table, f"vitals from {files}", VITAL_KEYS, None)

        def parse_vitals(raw: pd.DataFrame, positions: np.ndarray):
            origin = raw.pop("origin")
            self.stats.vital_rows_from_chartevents += int((origin == "chart").sum())
            self.stats.vital_rows_from_labs += int((origin == "lab").sum())
            crr = raw["channel"] == "Capillary refill rate"
            if crr.any():
                for pattern, text in _CRR:
                    raw.loc[crr & raw["value"].str.match(pattern), "value"] = text
            return parse(raw, positions)

        return self._stream(sql, parse_vitals)

    def _parser(self, parse, file: str, keys: tuple[str, ...], count_attr: str | None) -> Callable:
        """A chunk parser: one `parse` call for all rows of the chunk, split back by record."""

        def run(raw: pd.DataFrame, positions: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
            parsed, problems = parse(raw, file)
            table = parsed.table
            rows = align_rows(raw, table, keys, file)
            if rows is None:  # rows could not be matched one to one: parse each record on its own
                return self._parse_per_record(parse, raw, positions, file, count_attr)
            self.problems.extend(self._locate(problems, positions))
            if count_attr:
                setattr(self.stats, count_attr, getattr(self.stats, count_attr) + len(table))
            return table, positions[rows]

        return run

    def _parse_per_record(self, parse, raw, positions, file, count_attr):
        parts, out_positions = [], []
        for position, rows in duck.group_positions(positions).items():
            record_id = self._units["record_id"].iloc[position]
            parsed, problems = parse(raw.iloc[rows].reset_index(drop=True), f"{file} ({record_id})")
            self.problems.extend(problems)
            parts.append(parsed.table)
            out_positions.append(np.full(len(parsed.table), position, dtype=np.int64))
        table = pd.concat(parts, ignore_index=True)
        if count_attr:
            setattr(self.stats, count_attr, getattr(self.stats, count_attr) + len(table))
        return table, np.concatenate(out_positions)

    def _locate(self, problems: list[Problem], positions: np.ndarray) -> list[Problem]:
        """'row N: field' of a chunk -> '<record id> row k: field' (k counts that record's rows from 1)."""
        out = []
        for p in problems:
            match = re.match(r"^row (\d+): (.*)$", p.field)
            if match and 0 < int(match.group(1)) <= len(positions):
                n = int(match.group(1)) - 1
                position = positions[n]
                k = int((positions[:n] == position).sum()) + 1
                field_ = f"{self._units['record_id'].iloc[position]} row {k}: {match.group(2)}"
                p = Problem(p.severity, p.file, field_, p.message)
            out.append(p)
        return out

    def _note_stream(self) -> RecordRows:
        parts = []
        for table, category in NOTE_TABLES.items():
            if table not in self.columns:
                continue
            time = _text("n.charttime", self._has(table, "charttime"))
            t = _time("n.charttime") if self._has(table, "charttime") else "NULL::TIMESTAMP"
            events = (f"SELECT {_id('n.hadm_id')} AS hadm_id, {t} AS t, {time} AS time, '{category}' AS category, "
                      f"coalesce(CAST(n.text AS VARCHAR), '') AS text, '{table}' AS origin FROM {table} n")
            parts.append(f"SELECT position, t, time, category, text, origin FROM ({self._placed(events)})")
        if not parts:
            return RecordRows(_empty())
        sql = f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY position, t NULLS LAST, origin"
        return self._stream(sql)

    def _diagnosis_stream(self) -> RecordRows:
        if "diagnoses_icd" not in self.columns:
            return RecordRows(_empty())
        version = _text("icd_version", self._has("diagnoses_icd", "icd_version"))
        sql = (f"SELECT u.position, d.code, d.version FROM (SELECT {_id('hadm_id')} AS hadm_id, "
               f"trim(CAST(icd_code AS VARCHAR)) AS code, {version} AS version FROM diagnoses_icd "
               "WHERE coalesce(trim(CAST(icd_code AS VARCHAR)), '') <> '') d JOIN units u ON d.hadm_id = u.hadm_id "
               "ORDER BY u.position")
        return self._stream(sql)

    def _image_stream(self) -> RecordRows:
        if CXR_METADATA not in self.columns:
            return RecordRows(_empty())
        sql = f"SELECT position, t, subject_id, study_id, dicom_id, view FROM ({self._linked_images_sql()}) ORDER BY position, t"
        return self._stream(sql)

    # ---- one record

    def _record(self, position: int, rows: dict[str, pd.DataFrame | None]) -> PatientRecord:
        unit = self._units.iloc[position]
        record_id = str(unit["record_id"])
        index_time = unit["index_time"] if pd.notna(unit["index_time"]) else None
        key = f"hadm_id {unit['hadm_id']}" if self.unit == "admission" else f"stay_id {unit['stay_id']}"
        where = f"{self.root}: {key}"
        problems: list[Problem] = []
        age, sex = self._demographics(unit, index_time, where, problems)
        record = PatientRecord(
            patient_id=record_id, age=age, sex=sex, index_time=index_time, problems=problems, source=where,
            labs=Labs(rows["labs"] if rows["labs"] is not None else empty_table(Labs).copy()),
            vitals=Vitals(rows["vitals"] if rows["vitals"] is not None else empty_table(Vitals).copy()),
        )
        record.notes = self._notes(rows["notes"])
        record.images = self._images(rows["images"], problems)
        record.labels = self._labels(unit, rows["diagnoses"], where, problems)
        return record

    def _demographics(self, unit: pd.Series, index_time, where: str, problems: list[Problem]):
        if "patients" not in self.columns:
            return None, None
        if not unit["has_patient"]:
            problems.append(warning(self._file("patients"), "subject_id",
                                    f"subject_id {unit['subject_id']} not found: age and sex unknown"))
            return None, None
        sex = str(unit["gender"]).strip().upper()
        sex = sex if sex in ("F", "M") else None
        anchor_age, anchor_year = unit["anchor_age"], unit["anchor_year"]
        if pd.isna(anchor_age):
            return None, sex
        if anchor_age > OLDEST_ANCHOR_AGE:
            problems.append(warning(self._file("patients"), "anchor_age", f"{where}: anchor_age {anchor_age:g}: "
                                    f"MIMIC-IV groups patients older than 89; age set to {MAX_AGE:g}"))
            return MAX_AGE, sex
        if index_time is None or pd.isna(anchor_year):
            return float(anchor_age), sex
        return float(anchor_age + (pd.Timestamp(index_time).year - anchor_year)), sex

    def _notes(self, rows: pd.DataFrame | None) -> list[Note]:
        if rows is None:
            return []
        self.stats.note_rows += len(rows)
        return [
            Note(time=None if pd.isna(t) else pd.Timestamp(t), category=c, text=x, source=self._file(o))
            for t, c, x, o in zip(rows["t"], rows["category"], rows["text"], rows["origin"])
        ]

    def _images(self, rows: pd.DataFrame | None, problems: list[Problem]) -> list[ChestImage]:
        if rows is None:
            return []
        out = []
        for t, subject, study, dicom, view in zip(rows["t"], rows["subject_id"], rows["study_id"], rows["dicom_id"],
                                                  rows["view"]):
            folder = self.cxr_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            path = next((folder / f"{dicom}{s}" for s in IMAGE_SUFFIXES if (folder / f"{dicom}{s}").is_file()), None)
            if path is None:
                self.stats.images_missing += 1
                problems.append(warning(self._file(CXR_METADATA), "dicom_id", f"image {dicom} of study {study}: "
                                        f"expected {folder / (dicom + '.jpg')} (or .dcm); not found, image left out"))
                continue
            try:
                loaded = load_image(path)
            except DataError as exc:
                self.stats.images_missing += 1
                problems.append(warning(exc.problem.file, exc.problem.field, exc.problem.message + "; image left out"))
                continue
            problems.extend(loaded.problems)
            time = None if pd.isna(t) else pd.Timestamp(t)
            out.append(ChestImage(time=time, view=view or (loaded.metadata.view_position or ""), pixels=loaded.pixels,
                                  source=str(path), metadata=loaded.metadata))
        return out

    def _labels(self, unit: pd.Series, diagnoses: pd.DataFrame | None, where: str,
                problems: list[Problem]) -> dict[str, int] | None:
        labels: dict[str, int] = {}
        if "diagnoses_icd" in self.columns:
            if diagnoses is None:
                problems.append(warning(self._file("diagnoses_icd"), "hadm_id",
                                        f"{where}: no diagnoses; phenotype labels set to 0"))
                labels.update({name: 0 for name in self.definitions.benchmark})
            else:
                labels.update(match_phenotypes(diagnoses["code"], diagnoses["version"], self.definitions,
                                               map_icd10=True).labels)
        flag = str(unit.get("hospital_expire_flag", "") or "").strip()
        if flag in ("0", "1"):
            labels[MORTALITY] = int(flag)
        elif self._has("admissions", "hospital_expire_flag") and unit["hadm_id"]:
            problems.append(warning(self._file("admissions"), "hospital_expire_flag",
                                    f"{where}: expected 0 or 1, found {flag!r}; no mortality label"))
        return labels or None


__all__ = ["Mimic4Reader", "Mimic4Stats", "variable_map"]
